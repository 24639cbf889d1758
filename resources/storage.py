"""The media storage resource: configuration in, a ``MediaStore`` out."""

import dagster as dg
from pydantic import Field

from resources.media_store import DEFAULT_SOURCE_SUFFIXES, LocalMediaStore, MediaStore


class LocalMediaStorage(dg.ConfigurableResource):
    """Media and asset outputs on the local filesystem, laid out as ``<root>/<asset>/<media_id><suffix>``."""

    root: str = Field(description="Folder that holds every asset's outputs, one subfolder per asset.")
    source_location: str | None = Field(
        default=None,
        description="Folder of source media (Klio's data input location). Default: <root>/sources.",
    )
    source_suffixes: list[str] = Field(
        default=list(DEFAULT_SOURCE_SUFFIXES),
        description="Suffixes tried in order to find a media ID's source file, e.g. ['.wav', '.mp3'].",
    )

    def store(self) -> MediaStore:
        return LocalMediaStore(self.root, self.source_location, self.source_suffixes)

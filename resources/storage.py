"""The media storage resource: configuration in, a ``MediaStore`` out."""

import dagster as dg
from pydantic import Field

from resources.media_store import DEFAULT_SOURCE_SUFFIXES, GCSMediaStore, LocalMediaStore, MediaStore


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


class GCSMediaStorage(dg.ConfigurableResource):
    """Media and asset outputs in Google Cloud Storage, laid out as ``gs://<bucket>/<path>/<asset>/<media_id><suffix>``."""

    root: str = Field(description="gs://bucket[/path] that holds every asset's outputs.")
    source_location: str | None = Field(
        default=None, description="gs:// folder of source media. Default: <root>/sources.")
    source_suffixes: list[str] = Field(
        default=list(DEFAULT_SOURCE_SUFFIXES),
        description="Suffixes tried in order to find a media ID's source object.")
    project: str | None = Field(
        default=None, description="Google Cloud project for the storage client; default: from the environment.")

    def store(self) -> MediaStore:
        return GCSMediaStore(self.root, self.source_location, self.source_suffixes, self.project)

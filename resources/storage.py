"""The media storage resource: configuration in, a ``MediaStore`` out, and browser links to outputs."""

import posixpath
from urllib.parse import quote

import dagster as dg
from pydantic import Field

from klio_core.media_store import DEFAULT_SOURCE_SUFFIXES, GCSMediaStore, LocalMediaStore, MediaStore


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

    media_url: str | None = Field(
        default=None, description=(
            "Base URL under which a web server serves `root`, so that the UI can show plots and link "
            "outputs (klio-dev serves it at http://127.0.0.1:3001). Default: no links, paths only."))

    def store(self) -> MediaStore:
        return LocalMediaStore(self.root, self.source_location, self.source_suffixes)

    def browser_url(self, uri: str) -> str | None:
        """Where a browser opens the output at ``uri`` (a path under ``root``), if ``media_url`` is set."""
        if not self.media_url:
            return None
        return f"{self.media_url.rstrip('/')}/{quote(posixpath.relpath(uri, self.root))}"


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

    media_url: str | None = Field(
        default="https://storage.cloud.google.com", description=(
            "Base URL that opens gs:// objects in a browser with the viewer's Google credentials; "
            "None for paths only."))

    def store(self) -> MediaStore:
        return GCSMediaStore(self.root, self.source_location, self.source_suffixes, self.project)

    def browser_url(self, uri: str) -> str | None:
        """Where a browser opens the object at ``uri`` (``gs://bucket/path``)."""
        if not self.media_url:
            return None
        return f"{self.media_url.rstrip('/')}/{quote(uri[len('gs://'):])}"

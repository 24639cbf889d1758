"""Where media and outputs live, as plain picklable objects that Beam workers can use.

Nothing here imports Dagster: the stores travel inside Beam DoFns. The Dagster resources in
``resources.storage`` build them from configuration.

Layout, as in Klio's data locations::

    <source_location>/<media_id><suffix>     source media (data input); suffix from a configured list
    <root>/<asset>/<name><suffix>            one asset's output for one media ID (data output), where
                                             <name> is ``klio_core.media_ids.storage_name(media_id)``
    <root>/<asset>/.klio/<name>.json         what produced that output: code version and config
                                             fingerprint, and the upstream outputs' versions
    <root>/_runs/<run_id>/media/results/...  per-run scratch: the pipeline's per-item results
"""

import abc
import os
import posixpath
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

from klio_core.media_ids import storage_name

DEFAULT_SOURCE_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".aiff", ".aif",
                           ".webm", ".mp4")
"""Tried in this order; each is a format that ``klio_assets.builtin.decoding`` reads (soundfile or FFmpeg)."""


def parse_suffixes(value: str, setting: str = "KLIO_SOURCE_SUFFIXES") -> list[str]:
    """``".wav,.flac"`` -> ``[".wav", ".flac"]``; a ``ValueError`` names ``setting`` if it is malformed."""
    suffixes = [s.strip() for s in value.split(",") if s.strip()]
    bad = [s for s in suffixes if not s.startswith(".") or "/" in s or len(s) < 2]
    if not suffixes or bad:
        raise ValueError(f"{setting} must be a comma-separated list of file suffixes such as '.wav,.flac'; "
                         f"got {value!r}" + (f" (not suffixes: {bad})" if bad else ""))
    return suffixes


class MediaStore(abc.ABC):
    """Reads and writes media objects addressed by URI strings.

    Every path is derived in ``output_uri`` / ``source_candidates`` from a media ID validated
    where it entered (``klio_core.media_ids``), so no caller joins paths by hand. ``write_bytes``
    is atomic: a reader sees the old object or the
    whole new one, never a partial write.
    """

    def __init__(self, root: str, source_location: str, source_suffixes: Sequence[str]):
        parse_suffixes(",".join(source_suffixes), "source_suffixes")
        self.root = root.rstrip("/")
        self.source_location = source_location.rstrip("/")
        self.source_suffixes = tuple(source_suffixes)

    def output_uri(self, asset: str, media_id: str, suffix: str) -> str:
        return posixpath.join(self.root, asset, storage_name(media_id) + suffix)

    def record_uri(self, asset: str, media_id: str) -> str:
        """The small record written after an output: its fingerprint, version and upstream versions."""
        return posixpath.join(self.root, asset, ".klio", storage_name(media_id) + ".json")

    def source_candidates(self, media_id: str) -> list[str]:
        return [posixpath.join(self.source_location, media_id + s) for s in self.source_suffixes]

    def find_source(self, media_id: str) -> str | None:
        """The URI of the source media for ``media_id`` (first configured suffix that exists)."""
        return next((uri for uri in self.source_candidates(media_id) if self.exists(uri)), None)

    def read_source(self, media_id: str) -> tuple[bytes, str, str] | None:
        """``(data, suffix, uri)`` of the source media for ``media_id``, or None if there is none."""
        uri = self.find_source(media_id)
        if uri is None:
            return None
        return self.read_bytes(uri), uri[len(self.source_location) + 1 + len(media_id):], uri

    def scratch_uri(self, run_id: str, pipeline: str) -> str:
        """A per-run folder for what one of its pipelines reports: its per-item results."""
        return posixpath.join(self.root, "_runs", run_id, pipeline)

    def source_ids(self) -> Iterator[str]:
        """Every media ID with a source under ``source_location`` (recursively: a file in a
        subfolder has a ``/`` in its ID), once each, in listing order. Hidden files and files
        without a configured suffix are not sources. IDs are not validated here."""
        seen = set()
        suffixes = sorted(self.source_suffixes, key=len, reverse=True)
        for relative in self._relative_source_paths():
            if any(part.startswith(".") for part in relative.split("/")):
                continue
            suffix = next((s for s in suffixes if relative.endswith(s) and len(relative) > len(s)), None)
            if suffix is not None and (media_id := relative[:-len(suffix)]) not in seen:
                seen.add(media_id)
                yield media_id

    @abc.abstractmethod
    def _relative_source_paths(self) -> Iterator[str]:
        """Paths of every object under ``source_location``, relative to it, '/'-separated."""

    @abc.abstractmethod
    def exists(self, uri: str) -> bool: ...

    @abc.abstractmethod
    def read_bytes(self, uri: str) -> bytes: ...

    @abc.abstractmethod
    def write_bytes(self, uri: str, data: bytes) -> None: ...

    @abc.abstractmethod
    def list_uris(self, prefix: str) -> list[str]:
        """URIs of the objects directly under the folder ``prefix``."""


class LocalMediaStore(MediaStore):
    """A store on the local filesystem (or any mounted one). URIs are absolute paths."""

    def __init__(self, root: str, source_location: str | None = None,
                 source_suffixes: Sequence[str] = DEFAULT_SOURCE_SUFFIXES):
        root = os.path.abspath(root)
        source_location = os.path.abspath(source_location or posixpath.join(root, "sources"))
        super().__init__(root, source_location, source_suffixes)

    def exists(self, uri: str) -> bool:
        return os.path.isfile(uri)

    def _relative_source_paths(self) -> Iterator[str]:
        for folder, subfolders, names in os.walk(self.source_location):
            subfolders.sort()
            relative = os.path.relpath(folder, self.source_location)
            for name in sorted(names):
                path = name if relative == "." else os.path.join(relative, name)
                yield path.replace(os.sep, "/")

    def read_bytes(self, uri: str) -> bytes:
        with open(uri, "rb") as f:
            return f.read()

    def list_uris(self, prefix: str) -> list[str]:
        if not os.path.isdir(prefix):
            return []
        return sorted(os.path.join(prefix, name) for name in os.listdir(prefix)
                      if not name.startswith(".") and os.path.isfile(os.path.join(prefix, name)))

    def write_bytes(self, uri: str, data: bytes) -> None:
        # Write beside the target under a hidden name (stored names never start with '.'), flush to
        # disk, then rename over the target: os.replace is atomic on POSIX filesystems.
        directory, name = os.path.split(uri)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, uri)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def gcs_client(project: str | None = None):
    """A Google Cloud Storage client: the emulator's (anonymous) when ``STORAGE_EMULATOR_HOST`` is
    set, else with the credentials the environment provides."""
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=project or "emulator", credentials=AnonymousCredentials())
    return storage.Client(project=project)


class GCSMediaStore(MediaStore):
    """A store in Google Cloud Storage; URIs are ``gs://bucket/path``, laid out as the local store.

    Writes are atomic by GCS's own guarantee: an object becomes visible only when its upload
    completes, and a failed upload leaves the previous generation in place. The client is made
    on first use in each process (it does not travel with the pickled store). The Google client
    finds credentials in the environment, or the GCS emulator through ``STORAGE_EMULATOR_HOST``.
    """

    def __init__(self, root: str, source_location: str | None = None,
                 source_suffixes: Sequence[str] = DEFAULT_SOURCE_SUFFIXES, project: str | None = None):
        for name, uri in (("root", root), ("source_location", source_location or root)):
            if not uri.startswith("gs://") or len(uri) <= len("gs://"):
                raise ValueError(f"GCS store {name} must be a gs://bucket[/path] URI, not {uri!r}")
        super().__init__(root, source_location or posixpath.join(root.rstrip("/"), "sources"), source_suffixes)
        self.project = project
        self._client: Any = None  # a google.cloud.storage.Client, made on first use in each process

    def __getstate__(self):
        return {**self.__dict__, "_client": None}

    def _blob(self, uri: str):
        if self._client is None:
            self._client = gcs_client(self.project)
        bucket, _, name = uri[len("gs://"):].partition("/")
        return self._client.bucket(bucket).blob(name)

    def exists(self, uri: str) -> bool:
        return self._blob(uri).exists()

    def _relative_source_paths(self) -> Iterator[str]:
        folder = self._blob(self.source_location + "/")
        for blob in self._client.list_blobs(folder.bucket, prefix=folder.name):
            yield blob.name[len(folder.name):]

    def read_bytes(self, uri: str) -> bytes:
        return self._blob(uri).download_as_bytes()

    def write_bytes(self, uri: str, data: bytes) -> None:
        self._blob(uri).upload_from_string(data)

    def list_uris(self, prefix: str) -> list[str]:
        blob = self._blob(prefix.rstrip("/") + "/")
        pages = self._client.list_blobs(blob.bucket, prefix=blob.name, delimiter="/")
        return sorted(f"gs://{blob.bucket.name}/{b.name}" for b in pages
                      if not b.name[len(blob.name):].startswith("."))

"""Processing one media ID for one asset: read its inputs, call the author's function, write the output.

This is the work every Beam worker does per element. It knows nothing of Beam or Dagster; it takes
a ``store`` (``resources.media_store.MediaStore``) and returns an ``ItemResult`` in one of three
named states:

- ``materialized``: the output was written;
- ``skipped``: the output already exists and the task is not forced (Klio's output existence check);
- ``dropped``: an input (source media or an upstream output) is missing, so nothing was run;
- ``failed``: an input could not be decoded or the author's function raised.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MATERIALIZED = "materialized"
SKIPPED = "skipped"
DROPPED = "dropped"
FAILED = "failed"
STATES = (MATERIALIZED, SKIPPED, DROPPED, FAILED)


@dataclass(frozen=True)
class ItemInput:
    """One parameter of a per-item function: the source media (``asset`` is None) or an upstream output.

    For an upstream output ``codec`` is its ``klio_assets.codecs.Codec``; for the source media it is
    a callable ``(media_id, data, suffix) -> value`` (``klio_assets.media_types.SourceMedia``).
    """

    param: str
    asset: str | None
    codec: Any


@dataclass(frozen=True)
class ItemTask:
    """Everything a worker needs to produce ``asset`` for one media ID. Must stay picklable."""

    asset: str
    fn: Callable[..., Any]
    inputs: tuple[ItemInput, ...]
    output: Any  # klio_assets.codecs.Codec
    config: Any = None  # passed as ``config=`` when not None
    force: bool = False  # recompute even if the output exists


@dataclass
class ItemResult:
    media_id: str
    status: str
    reason: str = ""
    uri: str = ""
    metadata: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"media_id": self.media_id, "status": self.status, "reason": self.reason,
                "uri": self.uri, "metadata": self.metadata, "seconds": round(self.seconds, 6)}

    @classmethod
    def from_json(cls, d: dict) -> "ItemResult":
        return cls(**d)


class _Dropped(Exception):
    """An input is missing: the item is dropped, not failed."""


def _load_inputs(task: ItemTask, store, media_id: str) -> dict[str, Any]:
    values = {}
    for spec in task.inputs:
        if spec.asset is None:
            uri = store.find_source(media_id)
            if uri is None:
                tried = ", ".join(store.source_candidates(media_id))
                raise _Dropped(f"source media not found (tried {tried})")
            suffix = uri[len(store.source_location) + 1 + len(media_id):]
            values[spec.param] = spec.codec(media_id, store.read_bytes(uri), suffix)
        else:
            uri = store.output_uri(spec.asset, media_id, spec.codec.suffix)
            if not store.exists(uri):
                raise _Dropped(f"input '{spec.asset}' is not materialized ({uri} missing)")
            try:
                values[spec.param] = spec.codec.decode(store.read_bytes(uri))
            except Exception as e:
                raise ValueError(f"could not decode input '{spec.asset}' at {uri}: {e}") from e
    return values


def process_item(task: ItemTask, store, media_id: str) -> ItemResult:
    """Produce ``task.asset`` for ``media_id``; never raises for a per-item problem."""
    started = time.perf_counter()
    try:
        uri = store.output_uri(task.asset, media_id, task.output.suffix)
        if not task.force and store.exists(uri):
            return ItemResult(media_id, SKIPPED, reason="output exists (force to recompute)", uri=uri,
                              seconds=time.perf_counter() - started)
        kwargs = _load_inputs(task, store, media_id)
        if task.config is not None:
            kwargs["config"] = task.config
        value = task.fn(**kwargs)
        data = task.output.encode(value)
        store.write_bytes(uri, data)
        metadata = {**task.output.describe(value), "size_bytes": len(data)}
        return ItemResult(media_id, MATERIALIZED, uri=uri, metadata=metadata,
                          seconds=time.perf_counter() - started)
    except _Dropped as e:
        return ItemResult(media_id, DROPPED, reason=str(e), seconds=time.perf_counter() - started)
    except Exception as e:  # one bad item must not sink the others
        return ItemResult(media_id, FAILED, reason=f"{type(e).__name__}: {e}",
                          seconds=time.perf_counter() - started)

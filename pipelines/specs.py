"""What a worker needs to know of a per-item function: its inputs, outputs and options
(``ItemSpec``), and the same in one run (``ItemTask``). Plain, picklable data typed against the
bottom layer (``klio_core``): a worker unpickles a task without Dagster.
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from klio_core.checks import ItemCheck
from klio_core.codecs import Codec


@dataclass(frozen=True)
class ItemInput:
    """One parameter of a per-item function: the source media (``asset`` and ``codec`` are None;
    it receives a ``klio_core.media_types.SourceMedia``) or an upstream output, decoded by ``codec``."""

    param: str
    asset: str | None
    codec: Codec | None = None


@dataclass(frozen=True)
class ItemOutput:
    asset: str
    codec: Codec
    checks: tuple[ItemCheck, ...] = ()


@dataclass(frozen=True)
class ItemSpec:
    """A per-item function and how to call it: what ``@media_asset`` derives from its signature
    and options (``klio_assets.framework.media_asset.MediaAsset`` adds what only Dagster needs).

    ``fn`` returns the value of its single output or, when ``returns_dict``, a dict
    ``{asset: value}``.
    """

    name: str
    fn: Callable[..., Any]
    inputs: tuple[ItemInput, ...]
    outputs: tuple[ItemOutput, ...]
    code_version: str | None = None
    timeout_s: float | None = None  # per attempt
    retries: int = 0
    retry_backoff_s: float = 1.0  # before retry n (1-based): retry_backoff_s * 2 ** (n - 1)
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    returns_dict: bool = False
    setup: tuple[tuple[str, Callable[[], Any]], ...] = ()  # (parameter, factory): built once per worker

    @property
    def upstream(self) -> list[str]:
        return [spec.asset for spec in self.inputs if spec.asset is not None]


@dataclass(frozen=True)
class ItemTask(ItemSpec):
    """An ``ItemSpec`` in one run: everything a worker needs to produce some outputs for one media
    ID. Must stay picklable without Dagster. ``outputs`` may be the subset of the function's
    outputs to write.

    ``config`` is passed as ``config=`` when not None: plain data (a pydantic model, or a
    namespace of a ``dagster.Config``'s fields, ``klio_assets.framework.media_asset``);
    ``config_json`` is its JSON form, which the fingerprint hashes.
    """

    config: Any = None
    config_json: dict[str, Any] | None = None
    force: bool = False  # recompute even if fresh outputs exist
    run_id: str | None = None  # recorded beside each output: which run wrote it

    @property
    def fingerprint(self) -> str:
        body = json.dumps({"code_version": self.code_version, "config": self.config_json}, sort_keys=True,
                          default=str)
        return hashlib.sha256(body.encode()).hexdigest()[:16]

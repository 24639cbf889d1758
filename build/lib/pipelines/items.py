"""Processing one media ID through a chain of media assets: read inputs, call the author's functions, write.

This is the work every Beam worker does per element (``process_chain``): the ID passes through
each selected task once, in dependency order, and a value computed in this pass is handed to
its downstream tasks in memory. It knows nothing of Beam or Dagster; it takes a ``store``
(``resources.media_store.MediaStore``) and returns one ``ItemResult`` per task, in one of four
named states:

- ``materialized``: the outputs were written;
- ``skipped``: every output exists and was produced by the same code version and config
  (Klio's output existence check), and the task is not forced;
- ``dropped``: an input (source media or an upstream output) is missing, or its upstream task
  failed or was dropped in this pass, so nothing was run;
- ``failed``: an input could not be decoded, the function raised or timed out (after its
  retries), or its value could not be encoded.

Beside each output the store keeps a small record, written after the output itself (so a
half-finished write never counts as fresh): the fingerprint (code version and config) that
produced it, a version that is new on every write, and the versions of the upstream outputs it
was computed from. An output is fresh when its fingerprint matches and its upstream outputs have
not been rewritten since, so recomputing ``waveform`` makes ``mel_spectrogram`` stale too.
A replaced source file is not detected: force the run, as in Klio.
"""

import dataclasses
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipelines import isolation, worker_resources
from pipelines.isolation import ItemTimeout

MATERIALIZED = "materialized"
SKIPPED = "skipped"
DROPPED = "dropped"
FAILED = "failed"
STATES = (MATERIALIZED, SKIPPED, DROPPED, FAILED)


@dataclass(frozen=True)
class ItemInput:
    """One parameter of a per-item function: the source media (``asset`` is None) or an upstream output.

    For an upstream output ``codec`` is its ``klio_assets.codecs.Codec``; for the source media it is
    a callable ``(media_id, data, suffix, uri) -> value`` (``klio_assets.media_types.SourceMedia``).
    """

    param: str
    asset: str | None
    codec: Any


@dataclass(frozen=True)
class ItemCheck:
    """A check of one output value: ``fn(value, config)`` returns True/False or ``(passed, detail)``."""

    name: str
    fn: Callable[[Any, Any], bool | tuple[bool, str]]
    description: str = ""


@dataclass(frozen=True)
class ItemOutput:
    asset: str
    codec: Any  # klio_assets.codecs.Codec
    checks: tuple[ItemCheck, ...] = ()


@dataclass(frozen=True)
class ItemSpec:
    """A per-item function and how to call it: what ``@media_asset`` derives from its signature
    and options (``klio_assets.media_asset.MediaAsset`` adds what only Dagster needs).

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
    ID. Must stay picklable. ``outputs`` may be the subset of the function's outputs to write."""

    config: Any = None  # passed as ``config=`` when not None
    force: bool = False  # recompute even if fresh outputs exist
    run_id: str | None = None  # recorded beside each output: which run wrote it

    @property
    def fingerprint(self) -> str:
        config = self.config.model_dump(mode="json") if hasattr(self.config, "model_dump") else self.config
        body = json.dumps({"code_version": self.code_version, "config": config}, sort_keys=True, default=str)
        return hashlib.sha256(body.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CheckOutcome:
    """One check of one output value."""

    name: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class WrittenOutput:
    """One output of one media ID, as stored: where, its version (a new one per write), what the
    UI shows about it (JSON-safe ``metadata``) and its checks. ``written_by_run`` is set only for
    an output found fresh (skipped): the run that wrote it, from its record."""

    uri: str
    version: str
    metadata: dict
    checks: tuple[CheckOutcome, ...] = ()
    written_by_run: str | None = None

    @classmethod
    def from_record(cls, uri: str, record: dict) -> "WrittenOutput":
        return cls(uri, str(record.get("version")), record.get("metadata", {}),
                   tuple(CheckOutcome(**c) for c in record.get("checks", [])), str(record.get("run_id")))


@dataclass
class ItemResult:
    """What happened to one media ID in one task (``task`` is the ``ItemTask``'s name): for
    ``materialized`` and ``skipped``, each output asset's ``WrittenOutput``."""

    media_id: str
    status: str
    reason: str = ""
    outputs: dict[str, WrittenOutput] = field(default_factory=dict)
    seconds: float = 0.0
    retries: int = 0
    task: str = ""

    def to_json(self) -> dict:
        return {"media_id": self.media_id, "status": self.status, "reason": self.reason,
                "outputs": {asset: dataclasses.asdict(o) for asset, o in self.outputs.items()},
                "seconds": round(self.seconds, 6), "retries": self.retries, "task": self.task}

    @classmethod
    def from_json(cls, d: dict) -> "ItemResult":
        outputs = {asset: WrittenOutput(**{**o, "checks": tuple(CheckOutcome(**c) for c in o["checks"])})
                   for asset, o in d["outputs"].items()}
        return cls(**{**d, "outputs": outputs})


class _Dropped(Exception):
    """An input is missing: the item is dropped, not failed."""


class _GaveUp(Exception):
    """The function failed on its last attempt."""

    def __init__(self, error: BaseException, attempts: int):
        suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
        super().__init__(f"{type(error).__name__}: {error}{suffix}")
        self.retries = attempts - 1


def _load_source(spec: ItemInput, store, media_id: str):
    found = store.read_source(media_id)
    if found is None:
        raise _Dropped(f"source media not found (tried {', '.join(store.source_candidates(media_id))})")
    return spec.codec(media_id, *found)


class _Pass:
    """What one media ID's pass through a chain knows so far: the values computed (or read) in
    this pass, the records of upstream outputs, and why an upstream is not available."""

    def __init__(self, store, media_id: str):
        self.store = store
        self.media_id = media_id
        self.values: dict[str, Any] = {}
        self.records: dict[str, dict | None] = {}
        self.unavailable: dict[str, tuple[str, str]] = {}  # asset -> (asset at the root, what happened)

    def record(self, asset: str) -> dict | None:
        if asset not in self.records:
            self.records[asset] = _read_record(self.store, asset, self.media_id)
        return self.records[asset]

    def value(self, spec: ItemInput):
        """An upstream value: from this pass if computed here, else read once from storage."""
        if spec.asset in self.values:
            return self.values[spec.asset]
        uri = self.store.output_uri(spec.asset, self.media_id, spec.codec.suffix)
        if not self.store.exists(uri):
            raise _Dropped(f"input '{spec.asset}' is not materialized ({uri} missing)")
        try:
            value = spec.codec.decode(self.store.read_bytes(uri))
        except Exception as e:
            raise ValueError(f"could not decode input '{spec.asset}' at {uri}: {e}") from e
        self.values[spec.asset] = value
        return value


def _load_inputs(task: ItemTask, state: _Pass) -> dict[str, Any]:
    return {spec.param: _load_source(spec, state.store, state.media_id) if spec.asset is None
            else state.value(spec) for spec in task.inputs}


def _call_with_timeout(fn: Callable, kwargs: dict, timeout_s: float | None):
    """Call ``fn``; with ``timeout_s``, in this thread's child process, stopped past the timeout."""
    if timeout_s is None:
        return fn(**kwargs)
    return isolation.for_this_thread().call(fn, kwargs, timeout_s)


def _call_with_retries(task: ItemTask, kwargs: dict) -> tuple[Any, int]:
    """The function's value and how many retries it took; ``_GaveUp`` when the last attempt fails."""
    retry_on = tuple(task.retry_on) + (ItemTimeout,)
    attempt = 0
    while True:
        try:
            return _call_with_timeout(task.fn, kwargs, task.timeout_s), attempt
        except Exception as e:
            if attempt == task.retries or not isinstance(e, retry_on):
                raise _GaveUp(e, attempt + 1) from e
        time.sleep(task.retry_backoff_s * 2 ** attempt)
        attempt += 1


def _run_checks(output: ItemOutput, value, config) -> tuple[CheckOutcome, ...]:
    results = []
    for check in output.checks:
        try:
            verdict = check.fn(value, config)
            passed, detail = verdict if isinstance(verdict, tuple) else (bool(verdict), "")
        except Exception as e:
            passed, detail = False, f"check raised {type(e).__name__}: {e}"
        results.append(CheckOutcome(check.name, bool(passed), detail))
    return tuple(results)


def _read_record(store, asset: str, media_id: str) -> dict | None:
    uri = store.record_uri(asset, media_id)
    return json.loads(store.read_bytes(uri)) if store.exists(uri) else None


def _fresh_records(task: ItemTask, state: _Pass, input_versions: dict[str, str | None]) -> dict | None:
    """Each output's record, if every output is fresh; otherwise None."""
    records = {}
    for output in task.outputs:
        record = state.record(output.asset)
        if record is None or not state.store.exists(
                state.store.output_uri(output.asset, state.media_id, output.codec.suffix)):
            return None
        if record.get("fingerprint") != task.fingerprint or record.get("inputs") != input_versions:
            return None
        records[output.asset] = record
    return records


def _record(task: ItemTask, version: str, input_versions: dict, metadata: dict,
            checks: tuple[CheckOutcome, ...]) -> dict:
    """What is stored beside an output: enough to tell whether it is fresh, and to report it to
    Dagster again if the run that wrote it died before it could."""
    return {"fingerprint": task.fingerprint, "code_version": task.code_version, "version": version,
            "inputs": input_versions, "run_id": task.run_id, "metadata": metadata,
            "checks": [dataclasses.asdict(c) for c in checks]}


def _process(task: ItemTask, state: _Pass) -> ItemResult:
    started = time.perf_counter()
    store, media_id = state.store, state.media_id
    retries = 0
    try:
        missing = [f"input '{a}' {cause}" if root == a else f"input '{a}' was not produced: '{root}' {cause}"
                   for a in task.upstream if a in state.unavailable for root, cause in [state.unavailable[a]]]
        if missing:
            raise _Dropped("; ".join(missing))
        # Read before the inputs themselves: an upstream rewrite after this makes the output stale.
        input_versions = {a: (state.record(a) or {}).get("version") for a in task.upstream}
        records = None if task.force else _fresh_records(task, state, input_versions)
        if records is not None:
            outputs = {o.asset: WrittenOutput.from_record(store.output_uri(o.asset, media_id, o.codec.suffix),
                                                          records[o.asset]) for o in task.outputs}
            return ItemResult(media_id, SKIPPED, "output exists from the same code version, config and "
                              "inputs (force to recompute)", outputs, time.perf_counter() - started,
                              task=task.name)
        kwargs = _load_inputs(task, state)
        if task.config is not None:
            kwargs["config"] = task.config
        for param, factory in task.setup:
            kwargs[param] = worker_resources.get(task.name, param, factory)
        value, retries = _call_with_retries(task, kwargs)
        values = value if task.returns_dict else {task.outputs[0].asset: value}
        missing = [o.asset for o in task.outputs if not isinstance(values, dict) or o.asset not in values]
        if missing:
            raise ValueError(f"'{task.name}' must return a dict with a value for each output; missing {missing}")
        outputs = {}
        version = uuid.uuid4().hex
        for output in task.outputs:
            value = values[output.asset]
            data = output.codec.encode(value)
            metadata = {**output.codec.describe(value), "size_bytes": len(data)}
            checks = _run_checks(output, value, task.config)
            uri = store.output_uri(output.asset, media_id, output.codec.suffix)
            record = _record(task, version, input_versions, metadata, checks)
            store.write_bytes(uri, data)
            store.write_bytes(store.record_uri(output.asset, media_id), json.dumps(record).encode())
            state.values[output.asset] = value
            state.records[output.asset] = record
            outputs[output.asset] = WrittenOutput(uri, version, metadata, checks)
        return ItemResult(media_id, MATERIALIZED, outputs=outputs, seconds=time.perf_counter() - started,
                          retries=retries, task=task.name)
    except _Dropped as e:
        result = ItemResult(media_id, DROPPED, reason=str(e), seconds=time.perf_counter() - started)
    except _GaveUp as e:
        result = ItemResult(media_id, FAILED, reason=str(e), seconds=time.perf_counter() - started,
                            retries=e.retries)
    except Exception as e:  # one bad item must not sink the others
        result = ItemResult(media_id, FAILED, reason=f"{type(e).__name__}: {e}",
                            seconds=time.perf_counter() - started, retries=retries)
    result.task = task.name
    upstream_cause = next((state.unavailable[a] for a in task.upstream if a in state.unavailable), None)
    for output in task.outputs:
        verb = "failed" if result.status == FAILED else "was dropped"
        state.unavailable[output.asset] = upstream_cause or (output.asset, f"{verb} in this pass ({result.reason})")
    return result


def process_chain(tasks: Sequence[ItemTask], store, media_id: str) -> list[ItemResult]:
    """One pass of ``media_id`` through ``tasks`` (in dependency order): one ``ItemResult`` per task.

    A value computed in this pass is handed to the downstream tasks in memory; an upstream that
    is not in ``tasks``, or is fresh and skipped, is read from storage (once). A task whose
    upstream failed or was dropped in this pass is dropped, naming that upstream and its reason.
    Never raises for a per-item problem.
    """
    state = _Pass(store, media_id)
    return [_process(task, state) for task in tasks]

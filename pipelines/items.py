"""Processing one media ID through a chain of media assets: read inputs, call the author's functions, write.

This is the work every Beam worker does per element (``process_chain``): the ID passes through
each selected task once, in dependency order, and a value computed in this pass is handed to
its downstream tasks in memory. It knows nothing of Beam or Dagster; it takes a
``klio_core.media_store.MediaStore`` and returns one ``klio_core.records.ItemResult`` per task,
in one of the four ``ItemStatus`` states.

Beside each output the store keeps an ``OutputRecord``, written after the output itself: the
fingerprint (code version and config) that produced it, a version that is new on every write,
and the versions of the upstream outputs it was computed from. An output is fresh when its
fingerprint matches and its upstream outputs have not been rewritten since, so recomputing
``waveform`` makes ``mel_spectrogram`` stale too. A replaced source file is not detected: force
the run, as in Klio.

Outputs and records are written by a thread of the pass (``_Writer``), in order, while the next
function computes: a write waits on the disk (an fsync each) or on the object store, and on a
warm worker that wait would leave its core idle. ``process_chain`` returns once every write is
durable; an output that could not be written fails its task then, and drops what read it.
"""

import queue
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from klio_core.media_ids import InvalidMediaId, validate_media_id
from klio_core.media_store import MediaStore
from klio_core.media_types import SourceMedia
from klio_core.records import CheckOutcome, ItemResult, ItemStatus, OutputRecord, WrittenOutput
from pipelines import isolation
from pipelines.graph import call_kwargs, outputs_of
from pipelines.isolation import ItemTimeout
from pipelines.specs import ItemInput, ItemOutput, ItemTask


class _Dropped(Exception):
    """An input is missing: the item is dropped, not failed."""


class _GaveUp(Exception):
    """The function failed on its last attempt."""

    def __init__(self, error: BaseException, attempts: int):
        suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
        super().__init__(f"{type(error).__name__}: {error}{suffix}")
        self.retries = attempts - 1


def _load_source(store: MediaStore, media_id: str) -> SourceMedia:
    found = store.read_source(media_id)
    if found is None:
        base = store.source_candidates(media_id)[0].removesuffix(store.source_suffixes[0])
        raise _Dropped(f"source media not found: no {base} with any of the {len(store.source_suffixes)} source "
                       f"suffixes ({' '.join(store.source_suffixes)})")
    return SourceMedia(media_id, *found)


class _Writer:
    """Writes one pass's outputs, each with its record after it, in the order given, in a thread
    of its own; ``finish`` waits for them all and returns the outputs that could not be written,
    with the error."""

    def __init__(self, store: MediaStore):
        self.store = store
        self.pending: queue.SimpleQueue = queue.SimpleQueue()
        self.failed: dict[str, str] = {}  # asset -> error
        self.thread = threading.Thread(target=self._write_all, name="klio-output-writer", daemon=True)
        self.thread.start()

    def write(self, asset: str, objects: list[tuple[str, bytes]]) -> None:
        self.pending.put((asset, objects))

    def _write_all(self) -> None:
        while (item := self.pending.get()) is not None:
            asset, objects = item
            try:
                for uri, data in objects:
                    self.store.write_bytes(uri, data)
            except Exception as e:
                self.failed[asset] = f"{type(e).__name__}: {e}"

    def finish(self) -> dict[str, str]:
        self.pending.put(None)
        self.thread.join()
        return self.failed


class _Pass:
    """What one media ID's pass through a chain knows so far: the values computed (or read) in
    this pass, the records of upstream outputs, and why an upstream is not available."""

    def __init__(self, store: MediaStore, media_id: str, writer: _Writer):
        self.store = store
        self.media_id = media_id
        self.writer = writer
        self.values: dict[str, Any] = {}
        self.records: dict[str, OutputRecord | None] = {}
        self.unavailable: dict[str, tuple[str, str]] = {}  # asset -> (asset at the root, what happened)

    def record(self, asset: str) -> OutputRecord | None:
        if asset not in self.records:
            uri = self.store.record_uri(asset, self.media_id)
            self.records[asset] = OutputRecord.from_json(self.store.read_bytes(uri)) if self.store.exists(uri) else None
        return self.records[asset]

    def value(self, spec: ItemInput):
        """An upstream value: from this pass if computed here, else read once from storage."""
        assert spec.asset is not None and spec.codec is not None
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
    return {spec.param: _load_source(state.store, state.media_id) if spec.asset is None
            else state.value(spec) for spec in task.inputs}


def _call_with_timeout(task: ItemTask, kwargs: dict):
    """Call the function; with ``timeout_s``, in this thread's child process, stopped past the timeout."""
    if task.timeout_s is None:
        return task.fn(**kwargs)
    return isolation.for_this_thread().call(task.fn, kwargs, task.timeout_s)


def _call_with_retries(task: ItemTask, kwargs: dict) -> tuple[Any, int]:
    """The function's value and how many retries it took; ``_GaveUp`` when the last attempt fails."""
    retry_on = tuple(task.retry_on) + (ItemTimeout,)
    attempt = 0
    while True:
        try:
            return _call_with_timeout(task, kwargs), attempt
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


def _fresh_records(task: ItemTask, state: _Pass, input_versions: dict[str, str | None]) -> dict | None:
    """Each output's record, if every output is fresh; otherwise None."""
    records = {}
    for output in task.outputs:
        record = state.record(output.asset)
        if record is None or not state.store.exists(
                state.store.output_uri(output.asset, state.media_id, output.codec.suffix)):
            return None
        if record.fingerprint != task.fingerprint or record.inputs != input_versions:
            return None
        records[output.asset] = record
    return records


def _process(task: ItemTask, state: _Pass) -> ItemResult:
    started = time.perf_counter()
    store, media_id = state.store, state.media_id
    retries = 0
    try:
        missing = _missing_inputs(task, state.unavailable)
        if missing:
            raise _Dropped(missing)
        # Read before the inputs themselves: an upstream rewrite after this makes the output stale.
        input_versions = {a: record.version if (record := state.record(a)) else None for a in task.upstream}
        records = None if task.force else _fresh_records(task, state, input_versions)
        if records is not None:
            outputs = {o.asset: WrittenOutput.from_record(store.output_uri(o.asset, media_id, o.codec.suffix),
                                                          records[o.asset]) for o in task.outputs}
            return ItemResult(media_id, ItemStatus.SKIPPED, "output exists from the same code version, config "
                              "and inputs (force to recompute)", outputs, time.perf_counter() - started,
                              task=task.name)
        value, retries = _call_with_retries(task, call_kwargs(task, _load_inputs(task, state)))
        values = outputs_of(task, value)
        absent = [o.asset for o in task.outputs if not isinstance(values, dict) or o.asset not in values]
        if absent:
            raise ValueError(f"'{task.name}' must return a dict with a value for each output; missing {absent}")
        outputs = {}
        version = uuid.uuid4().hex
        for output in task.outputs:
            value = values[output.asset]
            data = output.codec.encode(value)
            metadata = {**output.codec.describe(value), "size_bytes": len(data)}
            checks = _run_checks(output, value, task.config)
            uri = store.output_uri(output.asset, media_id, output.codec.suffix)
            record = OutputRecord(task.fingerprint, task.code_version, version, input_versions, task.run_id,
                                  metadata, checks)
            state.writer.write(output.asset, [(uri, data), (store.record_uri(output.asset, media_id), record.to_json())])
            state.values[output.asset] = value
            state.records[output.asset] = record
            outputs[output.asset] = WrittenOutput(uri, version, metadata, checks, inputs=input_versions)
        return ItemResult(media_id, ItemStatus.MATERIALIZED, outputs=outputs, seconds=time.perf_counter() - started,
                          retries=retries, task=task.name)
    except _Dropped as e:
        result = ItemResult(media_id, ItemStatus.DROPPED, reason=str(e), seconds=time.perf_counter() - started)
    except _GaveUp as e:
        result = ItemResult(media_id, ItemStatus.FAILED, reason=str(e), seconds=time.perf_counter() - started,
                            retries=e.retries)
    except Exception as e:  # one bad item must not sink the others
        result = ItemResult(media_id, ItemStatus.FAILED, reason=f"{type(e).__name__}: {e}",
                            seconds=time.perf_counter() - started, retries=retries)
    result.task = task.name
    _mark_unavailable(task, result, state.unavailable)
    return result


def _missing_inputs(task: ItemTask, unavailable: dict[str, tuple[str, str]]) -> str:
    """Why ``task`` cannot run in this pass: its inputs that are unavailable, and why ('' if none)."""
    return "; ".join(f"input '{a}' {cause}" if root == a else f"input '{a}' was not produced: '{root}' {cause}"
                     for a in task.upstream if a in unavailable for root, cause in [unavailable[a]])


def _mark_unavailable(task: ItemTask, result: ItemResult, unavailable: dict[str, tuple[str, str]]) -> None:
    """Record that ``task``'s outputs are not available downstream, for a result that failed or was dropped."""
    upstream_cause = next((unavailable[a] for a in task.upstream if a in unavailable), None)
    for output in task.outputs:
        verb = "failed" if result.status == ItemStatus.FAILED else "was dropped"
        unavailable[output.asset] = upstream_cause or (output.asset, f"{verb} in this pass ({result.reason})")


def _after_failed_writes(tasks: Sequence[ItemTask], results: list[ItemResult],
                         failed: dict[str, str]) -> list[ItemResult]:
    """The pass's results once its writes are done: a task with an output that could not be
    written failed, and a task that read it (or what it left unmade) is dropped, as if the write
    had failed in the task itself."""
    unavailable: dict[str, tuple[str, str]] = {}
    final = []
    for task, result in zip(tasks, results, strict=True):
        if result.status == ItemStatus.MATERIALIZED:
            missing = _missing_inputs(task, unavailable)
            unwritten = [o.asset for o in task.outputs if o.asset in failed]
            if missing:
                result = ItemResult(result.media_id, ItemStatus.DROPPED, reason=missing, seconds=result.seconds,
                                    task=task.name)
            elif unwritten:
                result = ItemResult(result.media_id, ItemStatus.FAILED, seconds=result.seconds, retries=result.retries,
                                    reason=f"could not write '{unwritten[0]}': {failed[unwritten[0]]}", task=task.name)
        if result.status in (ItemStatus.DROPPED, ItemStatus.FAILED):
            _mark_unavailable(task, result, unavailable)
        final.append(result)
    return final


def process_chain(tasks: Sequence[ItemTask], store: MediaStore, media_id: str) -> list[ItemResult]:
    """One pass of ``media_id`` through ``tasks`` (in dependency order): one ``ItemResult`` per task.

    The media ID is checked here, once per pass (every storage path below derives from it
    unchecked); an invalid one fails every task with the reason. A value computed in this pass
    is handed to the downstream tasks in memory; an upstream that is not in ``tasks``, or is
    fresh and skipped, is read from storage (once). A task whose upstream failed or was dropped
    in this pass is dropped, naming that upstream and its reason. Never raises for a per-item
    problem.
    """
    try:
        validate_media_id(media_id)
    except InvalidMediaId as e:
        return [ItemResult(str(media_id), ItemStatus.FAILED, reason=str(e), task=task.name) for task in tasks]
    writer = _Writer(store)
    try:
        state = _Pass(store, media_id, writer)
        results = [_process(task, state) for task in tasks]
    finally:
        failed = writer.finish()
    return _after_failed_writes(tasks, results, failed) if failed else results

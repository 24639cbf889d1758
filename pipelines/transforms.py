"""Beam transforms that run per-item media processing. They take their settings as arguments.

Usage in any Beam pipeline, batch or streaming::

    results = media_ids | ProcessMediaItems([waveform_task, mel_task, mfcc_task], store)
    results.materialized | ...   # ItemResult per (task, ID) whose outputs were written
    results.skipped | ...        # ... whose outputs are fresh (not forced)
    results.dropped | ...        # ... whose input is missing or whose upstream did not succeed
    results.failed | ...         # ... whose processing failed (reason set)

Each media ID passes through every task in one worker pass (``pipelines.items.process_chain``).
With ``results_prefix`` set, each worker also writes the results it has as JSON lines to a file
of its own under that prefix, every ``flush_interval_s`` seconds and when a bundle finishes,
which is how a launcher follows a pipeline on any runner while it runs.
"""

import json
import time
import uuid
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from klio_core.media_store import MediaStore
from klio_core.records import ItemResult, ItemStatus
from klio_core.wire import MediaEvent
from pipelines.graph import tasks_for_event
from pipelines.items import process_chain
from pipelines.metrics import metrics_namespace
from pipelines.specs import ItemTask


class _TaskCounters:
    """One task's counters: ``received``, one per state, ``retried`` and the ``item_ms`` distribution."""

    def __init__(self, name: str):
        namespace = metrics_namespace(name)
        self.received = Metrics.counter(namespace, "received")
        self.by_state = {state: Metrics.counter(namespace, str(state)) for state in ItemStatus}
        self.retried = Metrics.counter(namespace, "retried")
        self.item_ms = Metrics.distribution(namespace, "item_ms")

    def count(self, result: ItemResult) -> None:
        self.received.inc()
        self.by_state[result.status].inc()
        if result.retries:
            self.retried.inc(result.retries)
        self.item_ms.update(int(result.seconds * 1000))


class ProcessItemFn(beam.DoFn):
    """Passes each media ID through the tasks and routes each task's ``ItemResult`` to its state's
    output, counting them in the namespace ``klio_assets.<task name>``.

    With ``results_prefix`` set, results are written to ``<results_prefix>/<random>.jsonl`` files
    (a retried bundle writes its items again; ``pipelines.run`` keeps the first result per task
    and media ID).
    """

    def __init__(self, tasks: Sequence[ItemTask], store: MediaStore, results_prefix: str | None = None,
                 flush_interval_s: float = 2.0):
        self.tasks = tuple(tasks)
        self.store = store
        self.results_prefix = results_prefix
        self.flush_interval_s = flush_interval_s
        self.counters = {task.name: _TaskCounters(task.name) for task in self.tasks}

    def start_bundle(self):
        self._pending: list[str] = []
        self._last_flush = time.monotonic()

    def process(self, media_id: str):
        for result in process_chain(self.tasks, self.store, media_id):
            self.counters[result.task].count(result)
            if self.results_prefix:
                self._pending.append(json.dumps(result.to_json()))
            yield beam.pvalue.TaggedOutput(str(result.status), result)
        if self._pending and time.monotonic() - self._last_flush >= self.flush_interval_s:
            self._flush()

    def finish_bundle(self):
        if self._pending:
            self._flush()

    def _flush(self):
        self.store.write_bytes(f"{self.results_prefix}/{uuid.uuid4().hex}.jsonl", "\n".join(self._pending).encode())
        self._pending = []
        self._last_flush = time.monotonic()


class ProcessEventFn(beam.DoFn):
    """A streaming job's per-item step: each ``MediaEvent`` runs the tasks it asks for
    (``pipelines.graph.tasks_for_event``: all of them top-down, the recipients and their upstream
    bottom-up, forced or not) on its media ID, and yields one ``(event, results)`` pair, counted
    as ``ProcessItemFn`` counts. Pings run nothing and yield no results. ``results`` is the same
    work the batch step does per ID (``pipelines.items.process_chain``).

    The local streaming driver calls ``results_for`` on warm workers; a Beam streaming pipeline
    (``pipelines.streaming``) runs it as a ParDo.
    """

    def __init__(self, tasks: Sequence[ItemTask], store: MediaStore):
        self.tasks = tuple(tasks)
        self.store = store
        self.counters = {task.name: _TaskCounters(task.name) for task in self.tasks}

    def results_for(self, event: MediaEvent) -> list[ItemResult]:
        if event.ping:
            return []
        results = process_chain(tasks_for_event(self.tasks, event.recipients, event.force), self.store, event.media_id)
        for result in results:
            self.counters[result.task].count(result)
        return results

    def process(self, event: MediaEvent):
        yield event, self.results_for(event)


class ProcessMediaItems(beam.PTransform):
    """Media IDs in; ``materialized``, ``skipped``, ``dropped`` and ``failed`` PCollections of ``ItemResult`` out."""

    def __init__(self, tasks: Sequence[ItemTask], store: MediaStore, results_prefix: str | None = None,
                 flush_interval_s: float = 2.0, label=None):
        super().__init__(label)
        self.fn = ProcessItemFn(tasks, store, results_prefix, flush_interval_s)

    def expand(self, media_ids):
        return (
            media_ids
            | "Distribute" >> beam.Reshuffle()
            | "ProcessItem" >> beam.ParDo(self.fn).with_outputs(*map(str, ItemStatus))
        )

"""Beam transforms that run per-item media processing. They take their settings as arguments.

Usage in any Beam pipeline, batch or streaming::

    outputs = media_ids | ProcessMediaItems(task, store)
    outputs.materialized | ...   # ItemResult per ID whose outputs were written
    outputs.skipped | ...        # ItemResult per ID whose outputs are fresh (not forced)
    outputs.dropped | ...        # ItemResult per ID whose input is missing (reason set)
    outputs.failed | ...         # ItemResult per ID whose processing failed (reason set)

With ``results_prefix`` set, every bundle also writes its results as JSON lines to a file of
its own under that prefix, which is how a launcher collects them on any runner.
"""

import json
import time
import uuid

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.items import STATES, process_item


def metrics_namespace(name: str) -> str:
    return f"klio_assets.{name}"


class ProcessItemFn(beam.DoFn):
    """Runs the task for each media ID and routes the ``ItemResult`` to its state's output.

    Counts ``received``, one counter per state and ``retried`` (retries spent), and records per-item
    milliseconds in the ``item_ms`` distribution, all in the namespace ``klio_assets.<task name>``.
    With ``progress_prefix`` set, each DoFn instance also writes ``{"done": n}`` under that folder
    at most every ``progress_interval_s`` seconds and at the end of each bundle, so that whoever
    launched the pipeline can report progress on any runner. With ``results_prefix`` set, each
    bundle writes its ``ItemResult``s to ``<results_prefix>/<random>.jsonl`` when it finishes (a
    retried bundle writes a second file; ``pipelines.run`` keeps one result per media ID).
    """

    def __init__(self, task, store, progress_prefix: str | None = None, progress_interval_s: float = 10.0,
                 results_prefix: str | None = None):
        self.task = task
        self.store = store
        self.progress_prefix = progress_prefix
        self.progress_interval_s = progress_interval_s
        self.results_prefix = results_prefix
        namespace = metrics_namespace(task.name)
        self.received = Metrics.counter(namespace, "received")
        self.by_state = {state: Metrics.counter(namespace, state) for state in STATES}
        self.retried = Metrics.counter(namespace, "retried")
        self.item_ms = Metrics.distribution(namespace, "item_ms")

    def setup(self):
        self._progress_uri = f"{self.progress_prefix}/{uuid.uuid4().hex}.json" if self.progress_prefix else None
        self._done = 0
        self._last_report = time.monotonic()

    def start_bundle(self):
        self._bundle_results = []

    def process(self, media_id: str):
        self.received.inc()
        result = process_item(self.task, self.store, media_id)
        self.by_state[result.status].inc()
        if result.retries:
            self.retried.inc(result.retries)
        self.item_ms.update(int(result.seconds * 1000))
        self._done += 1
        if self._progress_uri and time.monotonic() - self._last_report >= self.progress_interval_s:
            self._report_progress()
        if self.results_prefix:
            self._bundle_results.append(json.dumps(result.to_json()))
        yield beam.pvalue.TaggedOutput(result.status, result)

    def finish_bundle(self):
        if self._bundle_results:
            self.store.write_bytes(f"{self.results_prefix}/{uuid.uuid4().hex}.jsonl",
                                   "\n".join(self._bundle_results).encode())
            self._bundle_results = []
        if self._progress_uri and self._done:
            self._report_progress()

    def _report_progress(self):
        self.store.write_bytes(self._progress_uri, json.dumps({"done": self._done}).encode())
        self._last_report = time.monotonic()


class ProcessMediaItems(beam.PTransform):
    """Media IDs in; ``materialized``, ``skipped``, ``dropped`` and ``failed`` PCollections of ``ItemResult`` out."""

    def __init__(self, task, store, progress_prefix: str | None = None, progress_interval_s: float = 10.0,
                 results_prefix: str | None = None, label=None):
        super().__init__(label)
        self.fn = ProcessItemFn(task, store, progress_prefix, progress_interval_s, results_prefix)

    def expand(self, media_ids):
        return (
            media_ids
            | "Distribute" >> beam.Reshuffle()
            | "ProcessItem" >> beam.ParDo(self.fn).with_outputs(*STATES)
        )

"""Beam transforms that run per-item media processing. They take their settings as arguments.

Usage in any Beam pipeline, batch or streaming::

    outputs = media_ids | ProcessMediaItems(task, store)
    outputs.materialized | ...   # ItemResult per ID whose outputs were written
    outputs.skipped | ...        # ItemResult per ID whose outputs are fresh (not forced)
    outputs.dropped | ...        # ItemResult per ID whose input is missing (reason set)
    outputs.failed | ...         # ItemResult per ID whose processing failed (reason set)
"""

import json
import time
import uuid

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.items import STATES, process_item

BRANCHES = STATES


def metrics_namespace(name: str) -> str:
    return f"klio_assets.{name}"


class ProcessItemFn(beam.DoFn):
    """Runs the task for each media ID and routes the ``ItemResult`` to its state's output.

    Counts ``received``, one counter per state and ``retried`` (retries spent), and records per-item
    milliseconds in the ``item_ms`` distribution, all in the namespace ``klio_assets.<task name>``.
    With ``progress_prefix`` set, each DoFn instance also writes ``{"done": n}`` under that folder
    at most every ``progress_interval_s`` seconds and at the end of each bundle, so that whoever
    launched the pipeline can report progress on any runner.
    """

    def __init__(self, task, store, progress_prefix: str | None = None, progress_interval_s: float = 10.0):
        self.task = task
        self.store = store
        self.progress_prefix = progress_prefix
        self.progress_interval_s = progress_interval_s
        namespace = metrics_namespace(task.name)
        self.received = Metrics.counter(namespace, "received")
        self.by_state = {state: Metrics.counter(namespace, state) for state in BRANCHES}
        self.retried = Metrics.counter(namespace, "retried")
        self.item_ms = Metrics.distribution(namespace, "item_ms")

    def setup(self):
        self._progress_uri = f"{self.progress_prefix}/{uuid.uuid4().hex}.json" if self.progress_prefix else None
        self._done = 0
        self._last_report = time.monotonic()

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
        yield beam.pvalue.TaggedOutput(result.status, result)

    def finish_bundle(self):
        if self._progress_uri and self._done:
            self._report_progress()

    def _report_progress(self):
        self.store.write_bytes(self._progress_uri, json.dumps({"done": self._done}).encode())
        self._last_report = time.monotonic()


class ProcessMediaItems(beam.PTransform):
    """Media IDs in; ``materialized``, ``skipped``, ``dropped`` and ``failed`` PCollections of ``ItemResult`` out."""

    def __init__(self, task, store, progress_prefix: str | None = None, progress_interval_s: float = 10.0,
                 label=None):
        super().__init__(label)
        self.fn = ProcessItemFn(task, store, progress_prefix, progress_interval_s)

    def expand(self, media_ids):
        return (
            media_ids
            | "Distribute" >> beam.Reshuffle()
            | "ProcessItem" >> beam.ParDo(self.fn).with_outputs(*BRANCHES)
        )

"""Beam transforms that run per-item media processing. They take their settings as arguments.

Usage in any Beam pipeline, batch or streaming::

    outputs = media_ids | ProcessMediaItems(task, store)
    outputs.materialized | ...   # ItemResult per written output
    outputs.skipped | ...        # ItemResult per ID whose output already exists (not forced)
    outputs.dropped | ...        # ItemResult per ID whose input is missing (reason set)
    outputs.failed | ...         # ItemResult per ID whose processing raised (reason set)
"""

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.items import STATES, process_item

BRANCHES = STATES


def metrics_namespace(asset: str) -> str:
    return f"klio_assets.{asset}"


class ProcessItemFn(beam.DoFn):
    """Produces one asset for each media ID and routes the ``ItemResult`` to its state's output.

    Counts ``received`` and one counter per state, and records per-item milliseconds in the
    ``item_ms`` distribution, all in the namespace ``klio_assets.<asset>``.
    """

    def __init__(self, task, store):
        self.task = task
        self.store = store
        namespace = metrics_namespace(task.asset)
        self.received = Metrics.counter(namespace, "received")
        self.by_state = {state: Metrics.counter(namespace, state) for state in BRANCHES}
        self.item_ms = Metrics.distribution(namespace, "item_ms")

    def process(self, media_id: str):
        self.received.inc()
        result = process_item(self.task, self.store, media_id)
        self.by_state[result.status].inc()
        self.item_ms.update(int(result.seconds * 1000))
        yield beam.pvalue.TaggedOutput(result.status, result)


class ProcessMediaItems(beam.PTransform):
    """Media IDs in; ``materialized``, ``skipped``, ``dropped`` and ``failed`` PCollections of ``ItemResult`` out."""

    def __init__(self, task, store, label=None):
        super().__init__(label)
        self.task = task
        self.store = store

    def expand(self, media_ids):
        return (
            media_ids
            | "Distribute" >> beam.Reshuffle()
            | "ProcessItem" >> beam.ParDo(ProcessItemFn(self.task, self.store)).with_outputs(*BRANCHES)
        )

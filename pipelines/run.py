"""Runs one media asset over a batch of media IDs as one Beam pipeline, and collects what happened."""

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.items import ItemResult, ItemTask
from pipelines.transforms import ProcessMediaItems, metrics_namespace


@dataclass
class PipelineOutcome:
    results: list[ItemResult]
    counters: dict[str, int]


def build_item_pipeline(task: ItemTask, store, media_ids: list[str], options: PipelineOptions,
                        scratch_uri: str, progress_interval_s: float = 10.0) -> beam.Pipeline:
    """The pipeline that processes ``media_ids`` for ``task``: one ``ProcessMediaItems`` step whose
    bundles write their per-item results under ``<scratch_uri>/results`` and their progress under
    ``<scratch_uri>/progress``, through the store, so any runner whose workers reach the store
    works (a local folder for the DirectRunner or Dask on one machine, ``gs://`` for Dataflow).

    The pipeline ends at that step on purpose: runners that evaluate each branch of a graph on
    its own (the DaskRunner does) would otherwise process the media more than once.
    """
    pipeline = beam.Pipeline(options=options)
    (
        pipeline
        | "MediaIds" >> beam.Create(list(media_ids), reshuffle=False)
        | f"Process[{task.name}]" >> ProcessMediaItems(task, store, f"{scratch_uri}/progress", progress_interval_s,
                                                      results_prefix=f"{scratch_uri}/results")
    )
    return pipeline


def run_item_pipeline(task: ItemTask, store, media_ids: list[str], options: PipelineOptions,
                      scratch_uri: str, on_progress: Callable[[int, int], None] | None = None,
                      progress_interval_s: float = 10.0) -> PipelineOutcome:
    """Process ``media_ids`` for ``task`` in a single pipeline, wait for it to finish and read the
    per-item results back. While it runs, ``on_progress(done, total)`` is called every
    ``progress_interval_s`` seconds.
    """
    pipeline = build_item_pipeline(task, store, media_ids, options, scratch_uri, progress_interval_s)
    progress_prefix = f"{scratch_uri}/progress"

    finished: dict = {}

    def run():
        try:
            result = pipeline.run()
            try:
                result.wait_until_finish()
            finally:
                _close_dask_client(result)
            finished["result"] = result
        except BaseException as e:  # re-raised in the caller's thread
            finished["error"] = e

    runner = threading.Thread(target=run, name=f"beam-{task.name}", daemon=True)
    runner.start()
    while runner.is_alive():
        runner.join(progress_interval_s)
        if runner.is_alive() and on_progress is not None:
            on_progress(_progress(store, progress_prefix), len(media_ids))
    if "error" in finished:
        raise finished["error"]
    results = _read_results(store, f"{scratch_uri}/results")
    return PipelineOutcome(results, _counters(finished["result"], task.name, results))


def _close_dask_client(result) -> None:
    """The DaskRunner leaves the ``distributed.Client`` it made open; close it, or every run
    would leak a connection to the scheduler."""
    client = getattr(result, "client", None)
    if client is not None and hasattr(client, "close"):
        client.close()


def _progress(store, progress_prefix: str) -> int:
    done = 0
    for uri in store.list_uris(progress_prefix):
        try:
            done += json.loads(store.read_bytes(uri))["done"]
        except (OSError, ValueError, KeyError):  # being replaced right now: next time
            continue
    return done


def _read_results(store, results_prefix: str) -> list[ItemResult]:
    """One result per media ID: a retried bundle writes its items' results a second time."""
    by_id = {}
    for uri in store.list_uris(results_prefix):
        for line in store.read_bytes(uri).decode().splitlines():
            result = ItemResult.from_json(json.loads(line))
            by_id[result.media_id] = result
    return list(by_id.values())


def _counters(result, name: str, results: list[ItemResult]) -> dict[str, int]:
    """Beam's counters for this asset; runners without metrics (the DaskRunner) get the same
    counts from the per-item results."""
    try:
        query = result.metrics().query(MetricsFilter().with_namespace(metrics_namespace(name)))
    except NotImplementedError:
        counters = {"received": len(results), "retried": sum(r.retries for r in results)}
        for r in results:
            counters[r.status] = counters.get(r.status, 0) + 1
        return counters
    counters = {}
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + value
    return counters

"""Runs a run's media tasks over its media IDs as ONE Beam pipeline, and follows it while it runs."""

import json
import threading
from collections.abc import Iterator, Sequence

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from klio_core.media_store import MediaStore
from klio_core.records import ItemResult, ItemStatus
from pipelines.metrics import metrics_namespace
from pipelines.specs import ItemTask
from pipelines.transforms import ProcessMediaItems

NO_RESULT = "no result came back from the pipeline"


def build_media_pipeline(tasks: Sequence[ItemTask], store: MediaStore, media_ids: list[str], options: PipelineOptions,
                         results_prefix: str, flush_interval_s: float = 2.0) -> beam.Pipeline:
    """The pipeline that passes each of ``media_ids`` through ``tasks``: one ``ProcessMediaItems``
    step whose workers write their per-item results under ``results_prefix`` through the store,
    so any runner whose workers reach the store works (a local folder for the DirectRunner or
    Dask on one machine, ``gs://`` for Dataflow).

    The pipeline ends at that step on purpose: runners that evaluate each branch of a graph on
    its own (the DaskRunner does) would otherwise process the media more than once.
    """
    pipeline = beam.Pipeline(options=options)
    (
        pipeline
        | "MediaIds" >> beam.Create(list(media_ids), reshuffle=False)
        | "ProcessMedia" >> ProcessMediaItems(tasks, store, results_prefix, flush_interval_s)
    )
    return pipeline


class MediaPipelineRun:
    """One pipeline over ``media_ids``, run in a background thread; ``results()`` yields the
    per-item results in batches as the workers write them, and one result per task and media
    ID in all (a retried bundle's repeats are dropped; an ID that never came back is ``failed``
    with ``NO_RESULT``). After ``results()`` is exhausted, ``counters`` holds each task's counts.
    """

    def __init__(self, tasks: Sequence[ItemTask], store: MediaStore, media_ids: list[str], options: PipelineOptions,
                 scratch_uri: str, poll_interval_s: float = 2.0):
        self.tasks = tuple(tasks)
        self.store = store
        self.media_ids = list(media_ids)
        self.results_prefix = f"{scratch_uri}/results"
        self.poll_interval_s = poll_interval_s
        self.pipeline = build_media_pipeline(self.tasks, store, self.media_ids, options, self.results_prefix,
                                             flush_interval_s=poll_interval_s)
        self.counters: dict[str, dict[str, int]] = {}
        self._read_uris: set[str] = set()
        self._seen: dict[tuple[str, str], ItemResult] = {}

    def results(self) -> Iterator[list[ItemResult]]:
        finished: dict = {}

        def run():
            try:
                result = self.pipeline.run()
                try:
                    result.wait_until_finish()
                finally:
                    _close_dask_client(result)
                finished["result"] = result
            except BaseException as e:  # re-raised in the caller's thread
                finished["error"] = e

        runner = threading.Thread(target=run, name="beam-media-pipeline", daemon=True)
        runner.start()
        while runner.is_alive():
            runner.join(self.poll_interval_s)
            batch = self._read_new()
            if batch:
                yield batch
        if "error" in finished:
            raise finished["error"]
        batch = self._read_new()
        batch += [ItemResult(media_id, ItemStatus.FAILED, NO_RESULT, task=task.name)
                  for media_id in self.media_ids for task in self.tasks if (task.name, media_id) not in self._seen]
        if batch:
            yield batch
        self.counters = {task.name: _counters(finished["result"], task.name, self._seen.values())
                         for task in self.tasks}

    def _read_new(self) -> list[ItemResult]:
        batch = []
        for uri in self.store.list_uris(self.results_prefix):
            if uri in self._read_uris:
                continue
            self._read_uris.add(uri)
            for line in self.store.read_bytes(uri).decode().splitlines():
                result = ItemResult.from_json(json.loads(line))
                if (result.task, result.media_id) not in self._seen:
                    self._seen[(result.task, result.media_id)] = result
                    batch.append(result)
        return batch


def _close_dask_client(result) -> None:
    """The DaskRunner leaves the ``distributed.Client`` it made open; close it, or every run
    would leak a connection to the scheduler."""
    client = getattr(result, "client", None)
    if client is not None and hasattr(client, "close"):
        client.close()


def _counters(result, task_name: str, results) -> dict[str, int]:
    """Beam's counters for one task; runners without metrics (the DaskRunner) get the same
    counts from the per-item results."""
    try:
        query = result.metrics().query(MetricsFilter().with_namespace(metrics_namespace(task_name)))
    except NotImplementedError:
        mine = [r for r in results if r.task == task_name]
        counters = {"received": len(mine), "retried": sum(r.retries for r in mine)}
        for r in mine:
            counters[str(r.status)] = counters.get(str(r.status), 0) + 1
        return counters
    counters = {}
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + value
    return counters

"""Runs one media asset over a batch of media IDs as one Beam pipeline, and collects what happened."""

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.items import ItemResult, ItemTask
from pipelines.transforms import BRANCHES, ProcessMediaItems, metrics_namespace


@dataclass
class PipelineOutcome:
    results: list[ItemResult]
    counters: dict[str, int]


def run_item_pipeline(task: ItemTask, store, media_ids: list[str], options: PipelineOptions,
                      scratch_uri: str, on_progress: Callable[[int, int], None] | None = None,
                      progress_interval_s: float = 10.0) -> PipelineOutcome:
    """Process ``media_ids`` for ``task`` in a single pipeline and wait for it to finish.

    Per-item results are written as JSON lines under ``<scratch_uri>/results`` with Beam's own
    file IO, so this works on any runner whose workers can reach that location (a local folder
    for the DirectRunner, a ``gs://`` prefix for Dataflow), then read back here. While the
    pipeline runs, ``on_progress(done, total)`` is called every ``progress_interval_s`` seconds.
    """
    progress_prefix = f"{scratch_uri}/progress"
    pipeline = beam.Pipeline(options=options)
    outputs = (
        pipeline
        | "MediaIds" >> beam.Create(list(media_ids), reshuffle=False)
        | f"Process[{task.name}]" >> ProcessMediaItems(task, store, progress_prefix, progress_interval_s)
    )
    (
        [outputs[state] for state in BRANCHES]
        | "AllResults" >> beam.Flatten()
        | "ToJson" >> beam.Map(lambda r: json.dumps(r.to_json()))
        | "WriteResults" >> beam.io.WriteToText(f"{scratch_uri}/results", file_name_suffix=".jsonl")
    )

    finished: dict = {}

    def run():
        try:
            result = pipeline.run()
            result.wait_until_finish()
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
    return PipelineOutcome(_read_results(f"{scratch_uri}/results"), _counters(finished["result"], task.name))


def _progress(store, progress_prefix: str) -> int:
    done = 0
    for uri in store.list_uris(progress_prefix):
        try:
            done += json.loads(store.read_bytes(uri))["done"]
        except (OSError, ValueError, KeyError):  # being replaced right now: next time
            continue
    return done


def _read_results(results_prefix: str) -> list[ItemResult]:
    results = []
    for match in FileSystems.match([results_prefix + "*.jsonl"])[0].metadata_list:
        with FileSystems.open(match.path) as f:
            results.extend(ItemResult.from_json(json.loads(line)) for line in f.read().splitlines())
    return results


def _counters(result, name: str) -> dict[str, int]:
    query = result.metrics().query(MetricsFilter().with_namespace(metrics_namespace(name)))
    counters = {}
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + value
    return counters

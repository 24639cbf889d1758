"""Runs one asset over a batch of media IDs as one Beam pipeline, and collects what happened per ID."""

import json
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
                      results_prefix: str) -> PipelineOutcome:
    """Process ``media_ids`` for ``task.asset`` in a single pipeline and wait for it to finish.

    Per-item results are written as JSON lines under ``results_prefix`` with Beam's own file IO,
    so this works on any runner whose workers can reach that location (a local folder for the
    DirectRunner, a ``gs://`` prefix for Dataflow), then read back here.
    """
    pipeline = beam.Pipeline(options=options)
    outputs = (
        pipeline
        | "MediaIds" >> beam.Create(list(media_ids), reshuffle=False)
        | f"Process[{task.asset}]" >> ProcessMediaItems(task, store)
    )
    (
        [outputs[state] for state in BRANCHES]
        | "AllResults" >> beam.Flatten()
        | "ToJson" >> beam.Map(lambda r: json.dumps(r.to_json()))
        | "WriteResults" >> beam.io.WriteToText(results_prefix, file_name_suffix=".jsonl")
    )
    result = pipeline.run()
    result.wait_until_finish()
    return PipelineOutcome(_read_results(results_prefix), _counters(result, task.asset))


def _read_results(results_prefix: str) -> list[ItemResult]:
    results = []
    for match in FileSystems.match([results_prefix + "*.jsonl"])[0].metadata_list:
        with FileSystems.open(match.path) as f:
            results.extend(ItemResult.from_json(json.loads(line)) for line in f.read().splitlines())
    return results


def _counters(result, asset: str) -> dict[str, int]:
    query = result.metrics().query(MetricsFilter().with_namespace(metrics_namespace(asset)))
    counters = {}
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + value
    return counters

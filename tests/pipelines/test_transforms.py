import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from klio_assets.codecs import NDARRAY
from pipelines.items import ItemInput, ItemOutput, ItemTask
from pipelines.run import run_item_pipeline
from pipelines.transforms import ProcessMediaItems
from resources.media_store import LocalMediaStore


def doubled(numbers: np.ndarray) -> np.ndarray:
    if numbers.sum() < 0:
        raise ValueError("negative total")
    return numbers * 2


TASK = ItemTask("doubled", doubled, (ItemInput("numbers", "numbers", NDARRAY),), (ItemOutput("doubled", NDARRAY),))


@pytest.fixture
def store(tmp_path):
    """'good-1', 'good-2' have inputs; 'negative' makes the function raise; 'corrupt' holds bytes
    that are not .npy; 'absent' has no input at all."""
    store = LocalMediaStore(str(tmp_path))
    for media_id, value in [("good-1", [1, 2]), ("good-2", [3]), ("negative", [-5])]:
        store.write_bytes(store.output_uri("numbers", media_id, ".npy"), NDARRAY.encode(np.array(value)))
    store.write_bytes(store.output_uri("numbers", "corrupt", ".npy"), b"garbage")
    return store


IDS = ["good-1", "absent", "good-2", "negative", "corrupt"]


def test_each_item_lands_in_its_named_branch_and_is_counted(store):
    pipeline = TestPipeline()
    outputs = pipeline | beam.Create(IDS) | ProcessMediaItems(TASK, store)
    assert_that(outputs.materialized | "M" >> beam.Map(lambda r: r.media_id),
                equal_to(["good-1", "good-2"]), label="materialized")
    assert_that(outputs.dropped | "D" >> beam.Map(lambda r: (r.media_id, "input 'numbers' is not materialized" in r.reason)),
                equal_to([("absent", True)]), label="dropped")
    assert_that(outputs.failed | "F" >> beam.Map(lambda r: (r.media_id, r.reason.split(":")[0])),
                equal_to([("negative", "ValueError"), ("corrupt", "ValueError")]), label="failed")
    result = pipeline.run()
    result.wait_until_finish()

    counters = {c.key.metric.name: c.committed for c in result.metrics().query(
        MetricsFilter().with_namespace("klio_assets.doubled"))["counters"]}
    assert {k: v for k, v in counters.items() if v} == {"received": 5, "materialized": 2, "dropped": 1, "failed": 2}
    timings = result.metrics().query(MetricsFilter().with_name("item_ms"))["distributions"]
    assert timings[0].committed.count == 5

    np.testing.assert_array_equal(NDARRAY.decode(store.read_bytes(store.output_uri("doubled", "good-1", ".npy"))), [2, 4])
    np.testing.assert_array_equal(NDARRAY.decode(store.read_bytes(store.output_uri("doubled", "good-2", ".npy"))), [6])
    assert not store.exists(store.output_uri("doubled", "negative", ".npy"))


def test_failure_reasons_name_the_cause(store):
    corrupt_prefix = f"ValueError: could not decode input 'numbers' at {store.output_uri('numbers', 'corrupt', '.npy')}: "
    pipeline = TestPipeline()
    outputs = pipeline | beam.Create(["negative", "corrupt"]) | ProcessMediaItems(TASK, store)
    assert_that(outputs.failed | beam.Map(lambda r: (r.media_id, r.reason if r.media_id == "negative"
                                                     else r.reason.startswith(corrupt_prefix))),
                equal_to([("negative", "ValueError: negative total"), ("corrupt", True)]))
    assert_that(outputs.materialized, equal_to([]), label="none materialized")
    pipeline.run().wait_until_finish()


def test_run_item_pipeline_collects_every_result_and_the_counters(store, tmp_path):
    outcome = run_item_pipeline(TASK, store, IDS, PipelineOptions(["--runner=DirectRunner"]),
                                str(tmp_path / "_runs" / "r1" / "doubled"))
    assert sorted((r.media_id, r.status) for r in outcome.results) == [
        ("absent", "dropped"), ("corrupt", "failed"), ("good-1", "materialized"),
        ("good-2", "materialized"), ("negative", "failed")]
    good = next(r for r in outcome.results if r.media_id == "good-1").outputs["doubled"]
    assert good["uri"] == store.output_uri("doubled", "good-1", ".npy")
    assert good["metadata"] == {"shape": [2], "dtype": "int64", "size_bytes": len(NDARRAY.encode(np.array([2, 4])))}
    assert {k: v for k, v in outcome.counters.items() if v} == {"received": 5, "materialized": 2, "dropped": 1, "failed": 2}

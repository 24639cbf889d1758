import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from klio_core.codecs import NDARRAY
from klio_core.media_store import LocalMediaStore
from pipelines.items import process_chain
from pipelines.run import NO_RESULT, MediaPipelineRun
from pipelines.specs import ItemInput, ItemOutput, ItemTask
from pipelines.transforms import ProcessMediaItems


def doubled(numbers: np.ndarray) -> np.ndarray:
    if numbers.sum() < 0:
        raise ValueError("negative total")
    return numbers * 2


def plus_one(doubled: np.ndarray) -> np.ndarray:
    return doubled + 1


TASK = ItemTask("doubled", doubled, (ItemInput("numbers", "numbers", NDARRAY),), (ItemOutput("doubled", NDARRAY),))
NEXT = ItemTask("plus_one", plus_one, (ItemInput("doubled", "doubled", NDARRAY),), (ItemOutput("plus_one", NDARRAY),))


class CountingStore(LocalMediaStore):
    """A local store that counts reads per URI."""

    def __init__(self, root):
        super().__init__(root)
        self.reads = {}

    def read_bytes(self, uri):
        self.reads[uri] = self.reads.get(uri, 0) + 1
        return super().read_bytes(uri)


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
    outputs = pipeline | beam.Create(IDS) | ProcessMediaItems([TASK], store)
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
    outputs = pipeline | beam.Create(["negative", "corrupt"]) | ProcessMediaItems([TASK], store)
    assert_that(outputs.failed | beam.Map(lambda r: (r.media_id, r.reason if r.media_id == "negative"
                                                     else r.reason.startswith(corrupt_prefix))),
                equal_to([("negative", "ValueError: negative total"), ("corrupt", True)]))
    assert_that(outputs.materialized, equal_to([]), label="none materialized")
    pipeline.run().wait_until_finish()


def test_a_chain_hands_values_on_in_memory_and_drops_what_follows_a_failure(tmp_path):
    store = CountingStore(str(tmp_path))
    store.write_bytes(store.output_uri("numbers", "good", ".npy"), NDARRAY.encode(np.array([1, 2])))
    store.write_bytes(store.output_uri("numbers", "negative", ".npy"), NDARRAY.encode(np.array([-5])))

    first, second = process_chain([TASK, NEXT], store, "good")
    assert (first.task, first.status, second.task, second.status) == ("doubled", "materialized", "plus_one", "materialized")
    np.testing.assert_array_equal(NDARRAY.decode(open(store.output_uri("plus_one", "good", ".npy"), "rb").read()), [3, 5])
    assert store.reads.get(store.output_uri("doubled", "good", ".npy"), 0) == 0  # handed on, not read back
    assert store.reads[store.output_uri("numbers", "good", ".npy")] == 1

    failed, dropped = process_chain([TASK, NEXT], store, "negative")
    assert (failed.status, failed.reason) == ("failed", "ValueError: negative total")
    assert dropped.status == "dropped"
    assert dropped.reason == "input 'doubled' failed in this pass (ValueError: negative total)"


def test_a_fresh_upstream_is_skipped_and_read_once_from_storage(tmp_path):
    store = CountingStore(str(tmp_path))
    store.write_bytes(store.output_uri("numbers", "good", ".npy"), NDARRAY.encode(np.array([1, 2])))
    process_chain([TASK], store, "good")
    store.reads.clear()
    skipped, made = process_chain([TASK, NEXT], store, "good")
    assert (skipped.status, made.status) == ("skipped", "materialized")
    assert store.reads[store.output_uri("doubled", "good", ".npy")] == 1
    assert store.reads.get(store.output_uri("numbers", "good", ".npy"), 0) == 0


def test_a_media_pipeline_run_collects_one_result_per_task_and_id_and_the_counters(store, tmp_path):
    run = MediaPipelineRun([TASK, NEXT], store, IDS, PipelineOptions(["--runner=DirectRunner"]),
                           str(tmp_path / "_runs" / "r1" / "media"), poll_interval_s=0.2)
    results = [r for batch in run.results() for r in batch]
    assert sorted((r.task, r.media_id, r.status) for r in results) == sorted(
        [("doubled", "absent", "dropped"), ("doubled", "corrupt", "failed"), ("doubled", "good-1", "materialized"),
         ("doubled", "good-2", "materialized"), ("doubled", "negative", "failed"),
         ("plus_one", "absent", "dropped"), ("plus_one", "corrupt", "dropped"), ("plus_one", "good-1", "materialized"),
         ("plus_one", "good-2", "materialized"), ("plus_one", "negative", "dropped")])
    good = next(r for r in results if r.media_id == "good-1" and r.task == "doubled").outputs["doubled"]
    assert good.uri == store.output_uri("doubled", "good-1", ".npy")
    assert good.metadata == {"shape": [2], "dtype": "int64", "size_bytes": len(NDARRAY.encode(np.array([2, 4])))}
    assert good.checks == () and len(good.version) == 32 and good.written_by_run is None  # typed, through JSON
    assert {k: v for k, v in run.counters["doubled"].items() if v} == {
        "received": 5, "materialized": 2, "dropped": 1, "failed": 2}
    assert {k: v for k, v in run.counters["plus_one"].items() if v} == {
        "received": 5, "materialized": 2, "dropped": 3}


def test_an_id_whose_result_never_came_back_is_failed_for_every_task(store, tmp_path):
    run = MediaPipelineRun([TASK, NEXT], store, ["good-1"], PipelineOptions(["--runner=DirectRunner"]),
                           str(tmp_path / "_runs" / "r2" / "media"))
    run.media_ids.append("lost")  # an ID the pipeline was never given
    results = [r for batch in run.results() for r in batch]
    assert sorted((r.task, r.status, r.reason) for r in results if r.media_id == "lost") == [
        ("doubled", "failed", NO_RESULT), ("plus_one", "failed", NO_RESULT)]

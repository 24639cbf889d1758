"""Klio's job semantics on media assets: existence checks, failure isolation, retries, metrics, checks."""

import logging
import os
import shutil
import threading
import time

import dagster as dg
import numpy as np
import pytest

from klio_assets import Waveform, build_media_assets, media_asset
from klio_assets.builtin.audio import AUDIO_ASSETS, mfcc, waveform
from klio_core.checks import ItemCheck, shape_and_dtype
from pipelines import items
from pipelines.specs import ItemInput, ItemOutput, ItemTask
from resources.beam import BeamRunner
from resources.storage import LocalMediaStorage
from tests.conftest import materialize_ids, materialized_partitions, observations, run_summary


class PeakConfig(dg.Config):
    floor: float = 1e-4


@media_asset(code_version="1")
def loudest(waveform: Waveform, config: PeakConfig) -> np.ndarray:
    """The peak amplitude; refuses silent clips."""
    peak = float(np.abs(waveform.samples).max())
    if peak < config.floor:
        raise ValueError(f"silent clip (peak {peak:g})")
    return np.array([peak], dtype=np.float32)


def clone_sources(store_root: str, catalogue_ids: list[str], count: int) -> list[str]:
    sources = os.path.join(store_root, "sources")
    files = {f.split(".")[0]: f for f in os.listdir(sources)}
    ids = []
    for i in range(count):
        original = files[catalogue_ids[i % len(catalogue_ids)]]  # keeps its suffix: all four formats
        media_id = f"track-{i:02d}"
        shutil.copy(os.path.join(sources, original), os.path.join(sources, media_id + os.path.splitext(original)[1]))
        ids.append(media_id)
    return ids


def test_twenty_ids_with_three_bad_ones(instance, resources, store_root, catalogue_ids):
    good = clone_sources(store_root, catalogue_ids, 17)
    sources = os.path.join(store_root, "sources")
    with open(os.path.join(sources, "corrupt.wav"), "wb") as f:  # a WAV header, then garbage
        f.write(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(64))
    import soundfile
    soundfile.write(os.path.join(sources, "silent.wav"), np.zeros(22050, dtype=np.float32), 22050)
    ids = good[:8] + ["corrupt", "missing"] + good[8:12] + ["silent"] + good[12:]
    assert len(ids) == 20

    assets = build_media_assets([waveform, loudest])
    result = materialize_ids([assets], ids, instance, resources, raise_on_error=False)

    assert not result.success
    assert materialized_partitions(instance, "loudest") == set(good)
    assert len(materialized_partitions(instance, "loudest")) == 17
    reported = observations(instance, "loudest")
    assert reported["silent"] == {"status": "failed", "reason": "ValueError: silent clip (peak 0)"}
    assert reported["missing"]["status"] == "dropped"
    assert reported["corrupt"]["status"] == "dropped"  # its waveform failed, so loudest lacks its input
    assert observations(instance, "waveform")["corrupt"]["status"] == "failed"
    failure = result.failure_data_for_node("media_assets").user_failure_data
    assert set(failure.metadata["problems"].value) == {
        "waveform [corrupt]", "waveform [missing]", "loudest [corrupt]", "loudest [missing]", "loudest [silent]"}
    summary = run_summary(instance, "loudest", result.run_id)
    assert {k: summary[k] for k in ("received", "materialized", "skipped", "dropped", "failed")} == {
        "received": 20, "materialized": 17, "skipped": 0, "dropped": 2, "failed": 1}

    # Fix the causes and backfill just the three: they materialize; the 17 are not touched.
    shutil.copy(_any_source(sources, good[0]), os.path.join(sources, "missing.wav"))
    shutil.copy(_any_source(sources, good[1]), os.path.join(sources, "corrupt.wav"))
    before = {i: os.stat(os.path.join(store_root, "loudest", i + ".npy")).st_mtime_ns for i in good}
    retry = materialize_ids([assets], ["corrupt", "missing"], instance, resources)
    # The silent clip is fine; the function's floor was the bug. Changing the config retries it.
    retry_silent = materialize_ids([assets], ["silent"], instance, resources,
                                   run_config={"ops": {"media_assets": {"config": {"loudest": {"floor": 0.0}}}}})
    assert retry.success and retry_silent.success
    assert materialized_partitions(instance, "loudest") == set(ids)
    assert before == {i: os.stat(os.path.join(store_root, "loudest", i + ".npy")).st_mtime_ns for i in good}


def _any_source(sources: str, media_id: str) -> str:
    return next(os.path.join(sources, f) for f in os.listdir(sources) if f.startswith(media_id + "."))


def mtime(store_root, asset, media_id, suffix=".npy"):
    return os.stat(os.path.join(store_root, asset, media_id + suffix)).st_mtime_ns


def test_fresh_outputs_are_skipped_and_stale_ones_recomputed(instance, resources, store_root, catalogue_ids):
    media_id = catalogue_ids[0]
    assets = build_media_assets(AUDIO_ASSETS)
    run = lambda **kw: materialize_ids([assets], [media_id], instance, resources,  # noqa: E731
                                       selection=["waveform", "mel_spectrogram", "mfcc"], **kw)
    assert run().success
    first = mtime(store_root, "mfcc", media_id)

    second = run()  # same code version and config: skipped, counted and listed in the run's summary
    assert second.success
    assert mtime(store_root, "mfcc", media_id) == first
    summary = run_summary(instance, "mfcc", second.run_id)
    assert (summary["skipped"], summary["materialized"], summary["skipped_media_ids"]) == (1, 0, [media_id])
    assert media_id not in observations(instance, "mfcc")  # no event per skipped ID
    assert len(instance.fetch_materializations(dg.AssetKey("mfcc"), limit=10).records) == 1

    assert run(run_config={"ops": {"media_assets": {"config": {"mfcc": {"n_mfcc": 13}}}}}).success
    changed = mtime(store_root, "mfcc", media_id)
    assert changed != first  # config changed: stale, recomputed
    assert np.load(os.path.join(store_root, "mfcc", media_id + ".npy")).shape[0] == 13
    assert mtime(store_root, "waveform", media_id, ".wav") is not None

    assert run(run_config={"ops": {"media_assets": {"config": {"force": True, "mfcc": {"n_mfcc": 13}}}}}).success
    assert mtime(store_root, "mfcc", media_id) != changed  # forced by run config
    forced = mtime(store_root, "mfcc", media_id)
    assert run(tags={"klio/force": "true"},
               run_config={"ops": {"media_assets": {"config": {"mfcc": {"n_mfcc": 13}}}}}).success
    assert mtime(store_root, "mfcc", media_id) != forced  # forced by run tag

    # Upstream recomputed (forced) -> downstream stale, even with its own code and config unchanged.
    before_upstream = mtime(store_root, "mfcc", media_id)
    assert materialize_ids([assets], [media_id], instance, resources, selection=["mel_spectrogram"],
                           tags={"klio/force": "true"}).success
    assert run(run_config={"ops": {"media_assets": {"config": {"mfcc": {"n_mfcc": 13}}}}}).success
    assert mtime(store_root, "mfcc", media_id) != before_upstream

    bumped = media_asset(mfcc.fn, code_version="2")  # a new code version of the same function
    again = mtime(store_root, "mfcc", media_id)
    result = materialize_ids([build_media_assets([waveform, mel_spectrogram_of(AUDIO_ASSETS), bumped])], [media_id],
                             instance, resources, selection=["mfcc"],
                             run_config={"ops": {"media_assets": {"config": {"mfcc": {"n_mfcc": 13}}}}})
    assert result.success
    assert mtime(store_root, "mfcc", media_id) != again


def mel_spectrogram_of(assets):
    return next(a for a in assets if a.name == "mel_spectrogram")


def test_a_half_written_output_is_not_taken_as_fresh(instance, resources, store_root, catalogue_ids):
    media_id = catalogue_ids[1]
    assets = build_media_assets([waveform])
    assert materialize_ids([assets], [media_id], instance, resources).success
    os.remove(os.path.join(store_root, "waveform", ".klio", media_id + ".json"))  # crash before the record
    first = mtime(store_root, "waveform", media_id, ".wav")
    assert materialize_ids([assets], [media_id], instance, resources).success
    assert mtime(store_root, "waveform", media_id, ".wav") != first


# --- Retries, backoff and timeouts ------------------------------------------------------------

_ATTEMPTS = {}  # "path": a file that gains one byte per attempt


def attempts_file() -> str:
    return _ATTEMPTS["path"]


def fail_twice(path: str) -> None:
    """Raise ConnectionError on the first two calls (counted in the file at ``path``)."""
    with open(path, "a") as f:
        f.write("x")
    with open(path) as f:
        if len(f.read()) < 3:
            raise ConnectionError("transient")


def flaky(numbers: np.ndarray) -> np.ndarray:
    fail_twice(attempts_file())
    return numbers + 1


def slow(numbers: np.ndarray) -> np.ndarray:
    threading.Event().wait(30)  # not time.sleep: the tests replace that to record backoff waits
    return numbers


def never_returns(numbers: np.ndarray) -> np.ndarray:
    while True:  # busy, in Python: a thread running this could never be stopped
        pass


def raises_type_error(numbers: np.ndarray) -> np.ndarray:
    raise TypeError("a bug, not worth retrying")


def process_one(task: ItemTask, store, media_id: str) -> items.ItemResult:
    [result] = items.process_chain([task], store, media_id)
    return result


def _task(fn, **kwargs) -> ItemTask:
    from klio_core.codecs import NDARRAY
    return ItemTask("out", fn, (ItemInput("numbers", "numbers", NDARRAY),), (ItemOutput("out", NDARRAY),), **kwargs)


@pytest.fixture
def numbers_store(tmp_path):
    from klio_core.codecs import NDARRAY
    from klio_core.media_store import LocalMediaStore
    store = LocalMediaStore(str(tmp_path / "store"))
    store.write_bytes(store.output_uri("numbers", "n1", ".npy"), NDARRAY.encode(np.array([1, 2])))
    _ATTEMPTS["path"] = str(tmp_path / "attempts")
    return store


def test_retries_back_off_exponentially_then_succeed(numbers_store, monkeypatch):
    waits = []
    monkeypatch.setattr(items.time, "sleep", waits.append)
    result = process_one(_task(flaky, retries=3, retry_backoff_s=0.5), numbers_store, "n1")
    assert (result.status, result.retries) == ("materialized", 2)
    assert waits == [0.5, 1.0]


def test_retries_run_out_and_name_the_attempts(numbers_store, monkeypatch):
    monkeypatch.setattr(items.time, "sleep", lambda s: None)
    result = process_one(_task(flaky, retries=1, retry_backoff_s=0.1), numbers_store, "n1")
    assert result.status == "failed"
    assert result.reason == "ConnectionError: transient (after 2 attempts)"
    assert result.retries == 1


def test_only_listed_errors_are_retried(numbers_store, monkeypatch):
    waits = []
    monkeypatch.setattr(items.time, "sleep", waits.append)
    result = process_one(_task(raises_type_error, retries=3, retry_on=(ConnectionError,)), numbers_store, "n1")
    assert (result.status, result.reason, waits) == ("failed", "TypeError: a bug, not worth retrying", [])


def test_a_timed_out_attempt_fails_the_item_and_is_retried(numbers_store, monkeypatch):
    waits = []
    monkeypatch.setattr(items.time, "sleep", waits.append)
    result = process_one(_task(slow, timeout_s=0.2, retries=1, retry_backoff_s=0.1), numbers_store, "n1")
    assert result.status == "failed"
    assert result.reason == "ItemTimeout: timed out after 0.2 s (its process was stopped) (after 2 attempts)"
    assert waits == [0.1]


def test_a_timeout_stops_the_work_and_the_next_item_goes_on(numbers_store):
    """Past the timeout the call's process is killed: no thread or process of it keeps running."""
    import psutil

    from pipelines import isolation

    threads_before = set(threading.enumerate())
    result = process_one(_task(never_returns, timeout_s=0.5, retries=1, retry_backoff_s=0.01),
                                numbers_store, "n1")
    assert (result.status, result.retries) == ("failed", 1)
    assert "timed out after 0.5 s" in result.reason
    assert set(threading.enumerate()) <= threads_before
    busy = [p for p in psutil.Process().children(recursive=True) if p.status() == psutil.STATUS_RUNNING]
    assert busy == [], f"still running after the timeout: {[p.cmdline() for p in busy]}"

    # The same thread's next item (with a timeout) gets a fresh child and succeeds.
    numbers_store.write_bytes(numbers_store.output_uri("numbers", "n2", ".npy"), items_codec().encode(np.array([5])))
    ok = process_one(_task(lambda numbers: numbers * 2, timeout_s=30), numbers_store, "n2")
    assert ok.status == "materialized", ok.reason
    caller = isolation.for_this_thread()
    assert caller.pid is not None and psutil.Process(caller.pid).status() != psutil.STATUS_RUNNING
    caller.close()
    assert not psutil.pid_exists(caller.pid or -1)


def test_a_run_whose_function_never_returns_ends_with_each_id_failed(instance, resources, store_root, catalogue_ids):
    """The run finishes at all (the function never does): its wall time is bounded by the timeouts,
    and no process of the function outlives it."""
    import psutil

    @media_asset(timeout_s=0.5)
    def stuck(waveform: Waveform) -> np.ndarray:
        return never_returns(waveform.samples)

    ids = catalogue_ids[:3]
    result = materialize_ids([build_media_assets([waveform, stuck])], ids, instance, resources, raise_on_error=False)
    assert not result.success
    assert materialized_partitions(instance, "waveform") == set(ids)
    reported = observations(instance, "stuck")
    assert {m: r["status"] for m, r in reported.items()} == {m: "failed" for m in ids}
    assert all("timed out after 0.5 s (its process was stopped)" in r["reason"] for r in reported.values())
    busy = [p for p in psutil.Process().children(recursive=True) if p.status() == psutil.STATUS_RUNNING]
    assert busy == [], [p.cmdline() for p in busy]


def items_codec():
    from klio_core.codecs import NDARRAY
    return NDARRAY


def test_retries_and_timeouts_are_set_per_asset_and_reported(instance, resources, store_root, catalogue_ids, tmp_path):
    attempts = str(tmp_path / "asset-attempts")

    @media_asset(retries=2, retry_backoff_s=0.01, timeout_s=20)
    def flaky_peak(waveform: Waveform) -> np.ndarray:
        fail_twice(attempts)  # in a child process (timeout_s): state travels in the closure
        return np.abs(waveform.samples).max(keepdims=True)

    spec = build_media_assets([waveform, flaky_peak]).specs_by_key[dg.AssetKey("flaky_peak")]
    assert (spec.metadata["retries"], spec.metadata["timeout_s"]) == (2, 20)
    result = materialize_ids([build_media_assets([waveform, flaky_peak])], [catalogue_ids[0]], instance, resources)
    assert result.success
    records = instance.fetch_materializations(dg.AssetKey("flaky_peak"), limit=1).records
    assert records[0].asset_materialization.metadata["retries"].value == 2
    assert run_summary(instance, "flaky_peak", result.run_id)["retried"] == 2


# --- Metrics, progress and checks --------------------------------------------------------------

def test_runs_report_counters_timing_and_progress(instance, store_root, catalogue_ids):
    @media_asset
    def slowish(waveform: Waveform) -> np.ndarray:
        time.sleep(0.05)
        return waveform.samples[:10]

    ids = clone_sources(store_root, catalogue_ids, 12)
    resources = {"media_storage": LocalMediaStorage(root=store_root),
                 "beam_runner": BeamRunner(progress_interval_s=0.1)}
    result = materialize_ids([build_media_assets([waveform, slowish])], ids, instance, resources)
    assert result.success
    summary = run_summary(instance, "slowish", result.run_id)
    assert {k: summary[k] for k in ("received", "materialized", "skipped", "dropped", "failed", "retried")} == {
        "received": 12, "materialized": 12, "skipped": 0, "dropped": 0, "failed": 0, "retried": 0}
    assert 50 <= summary["item_ms_p50"] <= summary["item_ms_p90"] <= summary["item_ms_p99"] <= summary["item_ms_max"]
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    progress = [m for m in messages if "/ 12 media IDs done; per asset: " in m]
    done = [int(m.split(" /")[0]) for m in progress]
    assert len(done) >= 2 and done == sorted(done) and done[-1] == 12, done
    assert progress[-1].endswith("per asset: waveform 12 materialized; slowish 12 materialized"), progress[-1]


def test_finished_ids_are_reported_while_the_run_goes_on(instance, store_root, catalogue_ids):
    """The second ID's function waits until Dagster shows the first one materialized: reporting
    only when the pipeline ends would make it give up, and the run fail."""
    calls, ref = [], instance.get_ref()  # the DoFn is pickled: it carries the instance's reference

    @media_asset
    def waits_for_first(waveform: Waveform) -> np.ndarray:
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.5)  # longer than the flush interval: the worker writes this result now
            return waveform.samples[:1]
        with dg.DagsterInstance.from_ref(ref) as reader:
            for _ in range(600):
                if reader.fetch_materializations(dg.AssetKey("waits_for_first"), limit=1).records:
                    return waveform.samples[:1]
                time.sleep(0.1)
        raise TimeoutError("the first ID was not reported while the second was processed")

    ids = catalogue_ids[:2]
    resources = {"media_storage": LocalMediaStorage(root=store_root),
                 "beam_runner": BeamRunner(progress_interval_s=0.1)}
    result = materialize_ids([build_media_assets([waveform, waits_for_first])], ids, instance, resources,
                             raise_on_error=False)
    assert result.success, observations(instance, "waits_for_first")
    assert materialized_partitions(instance, "waits_for_first") == set(ids)


def test_built_in_assets_are_checked_per_partition(instance, resources, catalogue_ids):
    """Every check runs on every written output. A pass is counted (the run's result per check,
    the materialization's metadata); only a failure is recorded per partition."""
    ids = catalogue_ids[:2]
    result = materialize_ids([build_media_assets(AUDIO_ASSETS)], ids, instance, resources)
    evaluations = [e.dagster_event.event_specific_data
                   for e in instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)]
    by_check = {(e.asset_key.to_user_string(), e.check_name, e.partition): e for e in evaluations}
    assert {partition for _, _, partition in by_check} == {None}  # every check passed: no per-ID record
    expected = {("finite_values", "shape_and_dtype"): ("waveform", "spectrogram", "mel_spectrogram", "mfcc"),
                ("image_size",): ("waveform_plot", "spectrogram_plot", "mel_spectrogram_plot", "mfcc_plot")}
    for checks, assets in expected.items():
        for asset in assets:
            for check in checks:
                run_result = by_check[(asset, check, None)]
                assert run_result.passed and run_result.metadata["passed"].value == len(ids), (asset, check)
            for media_id in ids:
                [record] = instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[media_id]), limit=1).records
                metadata = record.asset_materialization.metadata
                assert metadata["checks_passed"].value == f"{len(checks)} of {len(checks)}: {', '.join(checks)}"
    assert len(by_check) == 4 * 2 + 4  # one result per selected check, for the run


def test_authors_attach_checks_and_failures_are_reported_not_fatal(instance, resources, catalogue_ids):
    def at_most_100_frames(value, config):
        return value.shape[-1] <= 100, f"{value.shape[-1]} frames"

    @media_asset(checks=[ItemCheck("short", at_most_100_frames, "No more than 100 frames."),
                         shape_and_dtype(lambda c: ((3,), "float64"))])
    def framed(waveform: Waveform) -> np.ndarray:
        return np.stack([waveform.samples] * 2).astype(np.float32)

    assets = build_media_assets([waveform, framed])
    assert {k.name for k in assets.check_keys if k.asset_key == dg.AssetKey("framed")} == {
        "finite_values", "short", "shape_and_dtype"}
    result = materialize_ids([assets], [catalogue_ids[0]], instance, resources, selection=["framed", "waveform"])
    assert result.success  # checks report; they do not fail the run
    framed_evaluations = [e.dagster_event.event_specific_data for e in instance.all_logs(
        result.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        if e.dagster_event.event_specific_data.asset_key == dg.AssetKey("framed")]
    evaluations = {e.check_name: e for e in framed_evaluations if e.partition == catalogue_ids[0]}
    run_results = {e.check_name: e for e in framed_evaluations if e.partition is None}
    assert not run_results["short"].passed and run_results["short"].metadata["failed"].value == 1
    assert run_results["short"].metadata["failed_media_ids"].value == [catalogue_ids[0]]
    assert run_results["finite_values"].passed and run_results["finite_values"].metadata["passed"].value == 1
    assert "finite_values" not in evaluations  # it passed: counted, not recorded per partition
    assert not evaluations["short"].passed and evaluations["short"].metadata["detail"].value == "33075 frames"
    assert not evaluations["shape_and_dtype"].passed
    assert evaluations["shape_and_dtype"].metadata["detail"].value == "got (2, 33075) float32, want (3) float64"


def test_a_run_that_goes_well_logs_nothing_alarming(instance, resources, catalogue_ids):
    """No warning, no error, and no "did not yield expected outputs" (Dagster's note when a
    selected check gets no result), for a run that writes, one that skips, and a ping."""
    ids = catalogue_ids[:2]
    assets = [build_media_assets(AUDIO_ASSETS)]
    runs = [materialize_ids(assets, ids, instance, resources),  # writes
            materialize_ids(assets, ids, instance, resources),  # every output fresh: skips
            materialize_ids(assets, ids, instance, resources, tags={"klio/ping": "true"})]
    for result in runs:
        assert result.success
        logs = instance.all_logs(result.run_id)
        alarming = [f"{e.level}: {e.message}" for e in logs
                    if e.level >= logging.WARNING or "did not yield" in (e.message or "")]
        assert not alarming, alarming
        assert any(e.dagster_event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION for e in logs)

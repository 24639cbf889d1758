"""Faults inside runs on the real dev stack: a run worker SIGKILLed mid-run, and a batch of bad
sources. Afterwards what the UI shows (the partition statuses over GraphQL) equals storage."""

import os
import signal
import time

import dagster as dg
import numpy as np
import pytest
import soundfile

from klio_dev.stack import processes, start_dev_stack, wait_until
from resources.dagster_tags import BACKFILL_TAG
from tests.conftest import observations
from tests.faults.test_run_killed import ASSETS, assert_whole, on_disk

pytestmark = [pytest.mark.slow, pytest.mark.faults]

PARTITION_STATUSES = """query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
  assetPartitionStatuses { ... on DefaultPartitionStatuses {
    materializedPartitions failedPartitions materializingPartitions } } } } }"""
RATE = 22050


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = start_dev_stack(str(tmp_path_factory.mktemp("faults")), demo_count=1, max_ids_per_run=500)
    yield stack
    stack.stop()


def noisy(path: str, seconds: float, seed: int) -> None:
    samples = (0.2 * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)
    soundfile.write(path, samples, RATE, subtype="PCM_16")


def ui_statuses(stack, asset: str) -> dict[str, set[str]]:
    statuses = stack.server.query(PARTITION_STATUSES, {"key": {"path": [asset]}})["assetNodeOrError"][
        "assetPartitionStatuses"]
    return {k: set(v) for k, v in statuses.items()}


def assert_ui_equals_disk(stack, ids: list[str]) -> None:
    for asset in ASSETS:
        shown = ui_statuses(stack, asset)
        written = on_disk(stack.data_root, asset) & set(ids)
        assert shown["materializedPartitions"] & set(ids) == written, (
            f"{asset}: the UI shows {len(shown['materializedPartitions'] & set(ids))} materialized, "
            f"storage holds {len(written)}: {sorted(written ^ (shown['materializedPartitions'] & set(ids)))[:10]}")
        for media_id in written:
            assert_whole(stack.data_root, asset, media_id)


REEXECUTE_FROM_FAILURE = """mutation($parent: String!) {
  launchRunReexecution(reexecutionParams: {parentRunId: $parent, strategy: FROM_FAILURE}) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""
NOT_RETRIED_IN_TERMINAL_BACKFILL = "Not retrying run since it is part of a backfill that is in a terminal state"


def wait_for_retry(stack, instance, run_id: str, timeout_s: float = 300) -> tuple[dg.DagsterRun, str]:
    """The finished retry of the failed run ``run_id``, and who launched it. Dagster's run retries
    do, unless its backfill completed between the run's failure and the retry decision
    (dagster-io/dagster#34204, open; fix in PR #34205): then Dagster says so in the run's log, the
    partitions it did not make show Failed, and this launches what the UI's "Re-execute from
    failure" button does."""
    deadline, by = time.monotonic() + timeout_s, "Dagster's run retries"
    while time.monotonic() < deadline:
        children = [r for r in instance.get_runs() if r.parent_run_id == run_id]
        if children and children[0].is_finished:
            return children[0], by
        said = [e.message for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)]
        if not children and any(NOT_RETRIED_IN_TERMINAL_BACKFILL in m for m in said):
            launched = stack.server.query(REEXECUTE_FROM_FAILURE, {"parent": run_id})["launchRunReexecution"]
            assert launched["__typename"] == "LaunchRunSuccess", launched
            by = "the UI's re-execution, after dagster-io/dagster#34204"
        time.sleep(1)
    run = instance.get_run_by_id(run_id)
    raise AssertionError(f"no retry of run {run_id} in {timeout_s} s: it is {run.status.value}, tags {dict(run.tags)}")


def run_worker_pid(location: str = "klio_assets") -> int | None:
    """The process executing a run of ``location``: its code server's spawned child (Dagster's
    default launcher). Named by location, since the tags team's runs and stream run beside ours."""
    running = processes()
    servers = {p.pid for p in running if "dagster api grpc" in p.command and f"--location-name {location}" in p.command}
    return next((p.pid for p in running if p.parent in servers and "spawn_main" in p.command), None)


def test_a_run_worker_killed_mid_run_is_retried_recomputing_nothing(stack, instance):
    sources = os.path.join(stack.data_root, "sources")
    ids = [f"killed-{i:02d}" for i in range(16)]
    for i, media_id in enumerate(ids):
        noisy(os.path.join(sources, media_id + ".wav"), 3.0, seed=i)
    instance.add_dynamic_partitions("media_ids", ids)
    backfill_id = stack.server.launch_backfill([[a] for a in ASSETS], ids)

    wait_until(lambda: len(on_disk(stack.data_root, "spectrogram_plot") & set(ids)) >= 4, 300,
               "the run to be writing its plots", stack.log_path)
    worker = run_worker_pid()
    assert worker is not None
    before_kill = {(a, m): os.stat(os.path.join(stack.data_root, a, ".klio", m + ".json")).st_mtime_ns
                   for a in ASSETS for m in on_disk(stack.data_root, a) & set(ids)}
    os.kill(worker, signal.SIGKILL)

    backfill = stack.server.wait_for_backfill(backfill_id, 600)
    [killed] = [r for r in instance.get_runs(dg.RunsFilter(tags={BACKFILL_TAG: backfill_id})) if not r.parent_run_id]
    retry, by = wait_for_retry(stack, instance, killed.run_id)
    killed = instance.get_run_by_id(killed.run_id)
    figures = (f"killed with {len(before_kill)} outputs written; killed run {killed.status.value}, "
               f"retry {retry.status.value} (by {by}), backfill {backfill['status']}")
    assert killed.status == dg.DagsterRunStatus.FAILURE and retry.status == dg.DagsterRunStatus.SUCCESS, figures
    recomputed = [key for key, mtime in before_kill.items()
                  if os.stat(os.path.join(stack.data_root, key[0], ".klio", key[1] + ".json")).st_mtime_ns != mtime]
    assert recomputed == [], f"{figures}; recomputed after the kill: {recomputed[:10]}"
    for asset in ASSETS:
        assert on_disk(stack.data_root, asset) >= set(ids), figures
    assert_ui_equals_disk(stack, ids)


def test_a_batch_of_bad_sources_reports_each_and_materializes_the_rest(stack, instance):
    sources = os.path.join(stack.data_root, "sources")
    good = ["good-1", "good-2", "good-3"]
    for i, media_id in enumerate(good):
        noisy(os.path.join(sources, media_id + ".wav"), 3.0, seed=100 + i)
    noisy(os.path.join(sources, "long-1.wav"), 120.0, seed=200)  # very long, and good
    noisy(os.path.join(sources, "whole.wav"), 2.0, seed=300)
    with open(os.path.join(sources, "whole.wav"), "rb") as f:
        data = f.read()
    with open(os.path.join(sources, "truncated-1.wav"), "wb") as f:
        f.write(data[:len(data) // 2])
    os.remove(os.path.join(sources, "whole.wav"))
    open(os.path.join(sources, "empty-1.wav"), "wb").close()
    with open(os.path.join(sources, "text-1.mp3"), "w") as f:
        f.write("not audio at all\n")
    reasons = {"truncated-1": "is truncated: its WAV header declares 2.000 s", "empty-1": "(0 bytes) is empty",
               "text-1": "could not be decoded: tried soundfile", "missing-1": "source media not found"}
    ids = good + ["long-1", *reasons]
    instance.add_dynamic_partitions("media_ids", ids)

    backfill = stack.server.wait_for_backfill(stack.server.launch_backfill([[a] for a in ASSETS], ids), 900)
    assert backfill["status"] in ("COMPLETED_FAILED", "FAILED", "COMPLETED_SUCCESS"), backfill
    [run] = backfill["runs"]
    assert run["status"] == "FAILURE", "items failed, so the run says so"

    reported = observations(instance, "waveform")
    for media_id, reason in reasons.items():
        assert reason in reported[media_id]["reason"], (media_id, reported[media_id])
        assert "object at 0x" not in reported[media_id]["reason"]
    for asset in ASSETS:
        assert on_disk(stack.data_root, asset) & set(ids) == set(good) | {"long-1"}, asset
        failed = ui_statuses(stack, asset)["failedPartitions"] & set(ids)
        assert failed == set(reasons), (asset, failed)  # the run failed: every ID it did not write
    assert_ui_equals_disk(stack, ids)

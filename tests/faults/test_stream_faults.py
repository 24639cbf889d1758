"""The media stream on the real dev stack, as ``scripts/dev.sh`` runs it: events published to the
emulator become materializations with no run per event, and a SIGKILL of the stream's process
mid-stream loses nothing and repeats nothing but what was in flight."""

import os
import signal
import time

import dagster as dg
import numpy as np
import pytest
import soundfile

from klio_assets.framework.stream import STREAM_JOB, STREAM_TAG
from klio_core.wire import MediaEvent, encode_event
from klio_dev.stack import processes, start_dev_stack, wait_until
from resources.pubsub import PubSubResource
from tests.faults.test_dev_stack_runs import assert_ui_equals_disk
from tests.faults.test_run_killed import ASSETS

pytestmark = [pytest.mark.slow, pytest.mark.faults]
RATE = 22050


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = start_dev_stack(str(tmp_path_factory.mktemp("stream")), demo_count=0, max_ids_per_run=50, streaming=True)
    yield stack
    stack.stop()


def stream_runs(instance, *statuses) -> list[dg.DagsterRun]:
    """This project's stream runs: the tags team's location has a stream job of the same name."""
    runs = instance.get_runs(dg.RunsFilter(job_name=STREAM_JOB, statuses=list(statuses)))
    return [r for r in runs if r.remote_job_origin and r.remote_job_origin.location_name == "klio_assets"]


def run_process_pid(instance, run_id: str) -> int:
    """The process executing a run: Dagster's "Started process for run (pid: N)" engine event
    names it (a code server may have other runs' processes beside it)."""
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records:
        pid = record.event_log_entry.dagster_event.engine_event_data.metadata.get("pid")
        if pid is not None:
            return int(pid.value)
    raise AssertionError(f"run {run_id} has no process yet")


def publish(stack, monkeypatch, ids: list[str]) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{stack.emulator_port}")
    pubsub = PubSubResource(project="klio-dev")
    pubsub.publish(pubsub.topic, [(encode_event(MediaEvent(m)), {}) for m in ids])


def write_clips(stack, ids: list[str], seconds: float) -> None:
    for i, media_id in enumerate(ids):
        samples = (0.2 * np.random.default_rng(i).standard_normal(int(seconds * RATE))).astype(np.float32)
        soundfile.write(os.path.join(stack.data_root, "sources", media_id + ".wav"), samples, RATE, subtype="PCM_16")


def materializations(instance, asset: str, media_id: str) -> int:
    return len(instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey(asset), asset_partitions=[media_id]), limit=10).records)


def done(instance, ids: list[str]) -> set[str]:
    left = set(ids)
    for asset in ASSETS:
        left &= set(instance.get_materialized_partitions(dg.AssetKey(asset)))
    return left


def test_events_become_materializations_in_one_long_running_run(stack, instance, monkeypatch):
    wait_until(lambda: stream_runs(instance, dg.DagsterRunStatus.STARTED), 300, "the stream to start", stack.log_path)
    [stream] = stream_runs(instance, dg.DagsterRunStatus.STARTED)
    ids = [f"new-{i}" for i in range(3)]
    write_clips(stack, ids, 2.0)
    batch_runs = lambda: [r for r in instance.get_runs() if r.tags.get(STREAM_TAG) != "true"]  # noqa: E731
    runs_before = len(batch_runs())  # (the tags team's stream may start meanwhile: it is not one)
    publish(stack, monkeypatch, ids)
    wait_until(lambda: done(instance, ids) == set(ids), 300, "the stream to materialize the IDs", stack.log_path)
    assert len(batch_runs()) == runs_before  # no run per event
    for media_id in ids:
        [record] = instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("mfcc_plot"), asset_partitions=[media_id]), limit=1).records
        assert record.run_id == stream.run_id
    assert set(ids) <= set(instance.get_dynamic_partitions("media_ids"))


def test_a_killed_stream_is_restarted_and_every_id_is_materialized_once(stack, instance, monkeypatch):
    wait_until(lambda: stream_runs(instance, dg.DagsterRunStatus.STARTED), 300, "the stream to start", stack.log_path)
    [first] = stream_runs(instance, dg.DagsterRunStatus.STARTED)
    ids = [f"kill-{i:02d}" for i in range(24)]  # enough that the kill finds work in flight
    write_clips(stack, ids, 3.0)
    publish(stack, monkeypatch, ids)
    wait_until(lambda: len(done(instance, ids)) >= 2, 300, "the stream to be working", stack.log_path)
    os.kill(run_process_pid(instance, first.run_id), signal.SIGKILL)
    killed_at = time.time()
    # the run is marked failed, the keeper starts another (the daemon's run retries do not: the
    # stream job is not retried), and the messages the killed one held come back when their ack
    # deadline passes
    wait_until(lambda: done(instance, ids) == set(ids), 600, "every ID after the kill", stack.log_path)
    # the IDs may all be reported before the kill lands: the keeper's restart is awaited on its own
    wait_until(lambda: [r for r in stream_runs(instance) if r.run_id != first.run_id], 300,
               "the keeper to start another stream", stack.log_path)
    time.sleep(10)  # two more keeper ticks: it must not start a third
    restarted = [r for r in stream_runs(instance) if r.run_id != first.run_id]
    assert len(restarted) == 1, f"one new stream run takes over, not {[r.run_id for r in restarted]}"
    assert instance.get_run_by_id(first.run_id).status == dg.DagsterRunStatus.FAILURE
    repeated = {(a, m): n for a in ASSETS for m in ids if (n := materializations(instance, a, m)) != 1}
    assert repeated == {}, f"killed {time.time() - killed_at:.0f} s ago; not once: {repeated}"
    assert_ui_equals_disk(stack, ids)


def test_a_killed_warm_worker_costs_the_stream_nothing(stack, instance, monkeypatch):
    wait_until(lambda: stream_runs(instance, dg.DagsterRunStatus.STARTED), 300, "the stream to start", stack.log_path)
    ids = [f"worker-{i:02d}" for i in range(8)]
    write_clips(stack, ids, 3.0)
    publish(stack, monkeypatch, ids)
    wait_until(lambda: len(done(instance, ids)) >= 1, 300, "the stream to be working", stack.log_path)
    everything = processes()
    dev = {p.pid for p in everything if "klio-dev" in p.command}
    workers = [p.pid for p in everything if p.parent in dev and "spawn_main" in p.command]
    assert workers, "no warm worker to kill"
    os.kill(workers[0], signal.SIGKILL)  # its nanny starts another; Dask runs its task again
    wait_until(lambda: done(instance, ids) == set(ids), 600, "every ID after the kill", stack.log_path)
    repeated = {(a, m): n for a in ASSETS for m in ids if (n := materializations(instance, a, m)) != 1}
    assert repeated == {}, f"not once: {repeated}"
    assert_ui_equals_disk(stack, ids)


TERMINATE = """mutation($runId: String!) { terminateRun(runId: $runId) { __typename
  ... on TerminateRunFailure { message } ... on PythonError { message } } }"""
LAUNCH = """mutation($selector: JobOrPipelineSelector!) { launchRun(executionParams: {selector: $selector}) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""


def test_terminate_drains_the_stream_and_a_relaunched_one_takes_what_it_held(stack, instance, monkeypatch):
    """Terminate, as the UI's button sends it: the stream gives back what it held, and is not
    restarted by the keeper; launched again from the launchpad, it does those events."""
    wait_until(lambda: stream_runs(instance, dg.DagsterRunStatus.STARTED), 300, "the stream to start", stack.log_path)
    [running] = stream_runs(instance, dg.DagsterRunStatus.STARTED)
    ids = [f"term-{i:02d}" for i in range(6)]
    write_clips(stack, ids, 3.0)
    publish(stack, monkeypatch, ids)
    wait_until(lambda: len(done(instance, ids)) >= 1, 300, "the stream to be working", stack.log_path)
    answer = stack.server.query(TERMINATE, {"runId": running.run_id})["terminateRun"]
    assert answer["__typename"] == "TerminateRunSuccess", answer
    wait_until(lambda: instance.get_run_by_id(running.run_id).status == dg.DagsterRunStatus.CANCELED, 120,
               "the stream to stop", stack.log_path)
    finished = done(instance, ids)
    time.sleep(15)  # three keeper ticks: it must not start another stream
    assert not stream_runs(instance, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.QUEUED)
    assert done(instance, ids) == finished  # nobody works on them meanwhile
    selector = {"repositoryLocationName": "klio_assets", "repositoryName": "__repository__", "jobName": STREAM_JOB}
    launched = stack.server.query(LAUNCH, {"selector": selector})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    wait_until(lambda: done(instance, ids) == set(ids), 300, "the relaunched stream to do the rest", stack.log_path)
    repeated = {(a, m): n for a in ASSETS for m in ids if (n := materializations(instance, a, m)) != 1}
    assert repeated == {}, f"not once: {repeated}"

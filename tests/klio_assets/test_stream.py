"""The media stream: one long-running run takes events from the real Pub/Sub emulator, reports
each ID to Dagster as it finishes, and acknowledges a message only after that."""

import threading
import time

import dagster as dg
import numpy as np
import pytest

from klio_assets import Waveform, build_media_assets, media_asset
from klio_assets.builtin.audio import AUDIO_ASSETS, waveform
from klio_assets.framework.stream import (
    STREAM_JOB,
    Held,
    Intake,
    MediaStream,
    StreamConfig,
    build_media_stream_job,
)
from klio_core.media_ids import PARTITIONS_NAME
from klio_core.wire import MediaEvent, encode_event, parse_event
from pipelines.streaming import encode_result
from pipelines.transforms import ProcessEventFn
from resources.beam import BeamRunner
from resources.dagster_tags import INPUT_EVENT_POINTER_TAG_PREFIX
from resources.pubsub import PubSubResource
from resources.sqlite_event_log import KeptOpenSqliteEventLogStorage
from resources.storage import LocalMediaStorage
from sensors.stream_sensor import keep_stream
from tests.conftest import materialized_partitions, observations, pinged

pytestmark = pytest.mark.slow  # starts the Pub/Sub emulator

FEATURES = [a for a in AUDIO_ASSETS if a.name in ("waveform", "mel_spectrogram", "mfcc")]


def stream_resources(store_root: str, pubsub: PubSubResource) -> dict:
    return {"media_storage": LocalMediaStorage(root=store_root), "beam_runner": BeamRunner(), "pubsub": pubsub}


def run_stream(job, instance, resources, **config) -> dg.ExecuteInProcessResult:
    """The stream job in this process until it has been idle for 3 s."""
    return job.execute_in_process(instance=instance, resources=resources,
                                  run_config={"ops": {"media_stream": {"config": {"stop_after_idle_s": 3.0, **config}}}})


def mark_started(instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    """What the run worker reports when a run starts."""
    instance.handle_new_event(dg.EventLogEntry(
        error_info=None, level="DEBUG", user_message="", run_id=run.run_id, timestamp=time.time(),
        dagster_event=dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, job_name=run.job_name)))


def publish(pubsub: PubSubResource, *events: MediaEvent | bytes) -> None:
    pubsub.publish(pubsub.topic, [(e if isinstance(e, bytes) else encode_event(e), {}) for e in events])


def pending(pubsub: PubSubResource) -> int:
    """Messages still on the input subscription (pulled, then let go)."""
    messages = pubsub.pull(100, wait_s=1.0)
    for m in messages:
        pubsub.subscriber.modify_ack_deadline(request={"subscription": pubsub.subscription_path,
                                                       "ack_ids": [m.ack_id], "ack_deadline_seconds": 0})
    return len(messages)


def test_the_stream_materializes_each_event_as_its_own_partition_and_acks_after(
        instance, store_root, catalogue_ids, pubsub):
    job = build_media_stream_job(FEATURES)
    publish(pubsub, *(MediaEvent(i) for i in catalogue_ids[:3]), b"a...b", MediaEvent("no-such-clip"))
    result = run_stream(job, instance, stream_resources(store_root, pubsub))
    assert result.success
    for asset in ("waveform", "mel_spectrogram", "mfcc"):
        assert materialized_partitions(instance, asset) == set(catalogue_ids[:3]), asset
    # each ID became a partition, and its materializations name the stream run that wrote them
    assert set(instance.get_dynamic_partitions(PARTITIONS_NAME)) == {*catalogue_ids[:3], "no-such-clip"}
    [record] = instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey("mfcc"), asset_partitions=[catalogue_ids[0]]), limit=1).records
    assert record.run_id == result.run_id
    assert record.asset_materialization.metadata["checks_passed"].value.startswith("2 of 2")
    # a dropped ID is shown at once with its reason; the bad event went to the dead letters
    assert observations(instance, "waveform")["no-such-clip"]["status"] == "dropped"
    assert "source media not found" in observations(instance, "waveform")["no-such-clip"]["reason"]
    dead = pubsub.pull(10, wait_s=2.0, subscription_path=pubsub.subscriber.subscription_path(
        pubsub.project, pubsub.dead_letter_topic + "-sub"))
    assert [m.message.data for m in dead] == [b"a...b"]
    letter = dead[0].message.attributes  # as the sensor's dead letters: why, where and which message
    assert "partition range" in letter["error"] and letter["source_subscription"] == pubsub.subscription
    assert letter["source_message_key"].startswith(letter["source_message_id"] + "@")
    assert pending(pubsub) == 0  # every message acknowledged


def test_a_redelivered_event_is_skipped_and_reported_once(instance, store_root, catalogue_ids, pubsub):
    """What a crash between the work and the ack leaves: the same message again. Its outputs
    are fresh, so nothing is computed, and Dagster keeps one materialization per asset."""
    job = build_media_stream_job(FEATURES)
    resources = stream_resources(store_root, pubsub)
    publish(pubsub, MediaEvent(catalogue_ids[0]))
    assert run_stream(job, instance, resources).success
    publish(pubsub, MediaEvent(catalogue_ids[0]))
    again = run_stream(job, instance, resources)
    assert again.success
    for asset in ("waveform", "mel_spectrogram", "mfcc"):
        records = instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(asset), asset_partitions=[catalogue_ids[0]]), limit=10).records
        assert len(records) == 1, asset
    assert "0 materialized, 3 skipped" in "\n".join(
        e.message for e in instance.all_logs(again.run_id) if e.message)


def test_force_ping_and_bottom_up_events(instance, store_root, catalogue_ids, pubsub):
    job = build_media_stream_job(FEATURES)
    resources = stream_resources(store_root, pubsub)
    media_id = catalogue_ids[1]
    publish(pubsub, MediaEvent(media_id, recipients=("mel_spectrogram",)))  # bottom-up: mfcc not asked for
    assert run_stream(job, instance, resources).success
    assert media_id in materialized_partitions(instance, "mel_spectrogram")
    assert media_id not in materialized_partitions(instance, "mfcc")
    publish(pubsub, MediaEvent(media_id, ping=True))
    assert run_stream(job, instance, resources).success
    assert media_id in pinged(instance, "mfcc")
    assert observations(instance, "mfcc").get(media_id, {}).get("status") != "ping"
    publish(pubsub, MediaEvent(media_id, force=True, recipients=("waveform",)))
    forced = run_stream(job, instance, resources)
    [record] = instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey("waveform"), asset_partitions=[media_id]), limit=1).records
    assert record.run_id == forced.run_id  # recomputed, though fresh


def test_terminate_drains_the_stream_and_its_messages_come_back(instance, store_root, catalogue_ids, pubsub):
    """An interrupted stream (Terminate in the UI) nacks what it held: the next stream gets it."""
    started = threading.Event()

    @media_asset
    def slow(waveform: Waveform) -> np.ndarray:
        started.set()
        time.sleep(10)
        return waveform.samples[:1]

    job = build_media_stream_job([waveform, slow])
    publish(pubsub, MediaEvent(catalogue_ids[2]))
    result: dict = {}
    runner = threading.Thread(target=lambda: result.setdefault("r", run_stream(
        job, instance, stream_resources(store_root, pubsub), progress_interval_s=0.5)), daemon=True)
    runner.start()
    assert started.wait(60)
    # a successor has started (the keeper rotates the stream): this one drains as Terminate does
    successor = instance.create_run_for_job(job_def=job, run_config={})
    mark_started(instance, successor)
    runner.join(60)
    assert not runner.is_alive() and result["r"].success
    assert pending(pubsub) == 1  # nacked: back on the subscription at once, for the next stream
    assert catalogue_ids[2] not in materialized_partitions(instance, "slow")
    assert "a newer stream run has started" in "\n".join(e.message for e in instance.all_logs(result["r"].run_id))


def test_the_keeper_starts_restarts_and_rotates_the_stream(instance):
    job = build_media_stream_job(FEATURES)
    first = keep_stream(instance, STREAM_JOB, rotate_after_s=3600, now=time.time())
    assert isinstance(first, dg.RunRequest) and first.run_key == "stream-after-none"
    run = instance.create_run_for_job(job_def=job, run_config={})
    assert isinstance(keep_stream(instance, STREAM_JOB, 3600, time.time()), dg.SkipReason)
    instance.report_run_failed(run)  # it crashed: start another, keyed by the one it follows
    restart = keep_stream(instance, STREAM_JOB, 3600, time.time())
    assert isinstance(restart, dg.RunRequest) and restart.run_key == f"stream-after-{run.run_id}"
    canceled = instance.create_run_for_job(job_def=job, run_config={})
    instance.report_run_canceling(canceled)  # a user asked to terminate it: it drains, not restarted meanwhile
    assert "being terminated" in keep_stream(instance, STREAM_JOB, 3600, time.time()).skip_message
    instance.report_run_canceled(canceled)  # and once it has stopped, it stays stopped
    assert "was terminated" in keep_stream(instance, STREAM_JOB, 3600, time.time()).skip_message


def test_event_output_passes_through_the_stream(instance, store_root, catalogue_ids, pubsub):
    @media_asset(event_output="klio")
    def peak(waveform: Waveform) -> np.ndarray:
        return np.abs(waveform.samples).max(keepdims=True)

    pubsub = PubSubResource(project=pubsub.project, topic=pubsub.topic, subscription=pubsub.subscription,
                            output_topic=pubsub.topic + "-out", ack_deadline_seconds=pubsub.ack_deadline_seconds)
    pubsub.publisher.create_topic(request={"name": pubsub.topic_path(pubsub.output_topic)})
    out_sub = pubsub.subscriber.subscription_path(pubsub.project, pubsub.output_topic + "-sub")
    pubsub.subscriber.create_subscription(request={"name": out_sub, "topic": pubsub.topic_path(pubsub.output_topic)})
    job = build_media_stream_job([waveform, peak])
    publish(pubsub, MediaEvent(catalogue_ids[0]))
    assert run_stream(job, instance, stream_resources(store_root, pubsub)).success
    sent = pubsub.pull(10, wait_s=3.0, subscription_path=out_sub)
    assert [(parse_event(m.message.data, set()).media_id, m.message.attributes["status"]) for m in sent] == [
        (catalogue_ids[0], "materialized")]
    assert build_media_assets([waveform, peak])  # the same assets, as a backfill runs them


def test_result_messages_of_a_streaming_beam_job_are_reported_then_acked(instance, store_root, catalogue_ids, pubsub):
    """The Dataflow path's Dagster side: the result messages a streaming Beam job writes
    (``pipelines.streaming``) are reported as the local stream reports, then acknowledged."""
    topic, subscription = pubsub.topic + "-results", pubsub.topic + "-results-sub"
    pubsub.publisher.create_topic(request={"name": pubsub.topic_path(topic)})
    path = pubsub.subscriber.subscription_path(pubsub.project, subscription)
    pubsub.subscriber.create_subscription(request={"name": path, "topic": pubsub.topic_path(topic)})
    worker = ProcessEventFn([m.task(None, run_id="a-dataflow-job") for m in FEATURES],
                            LocalMediaStorage(root=store_root).store())
    event = MediaEvent(catalogue_ids[3])
    pubsub.publish(topic, [(encode_result(event, worker.results_for(event)), {}), (b"not a result", {})])
    result = run_stream(build_media_stream_job(FEATURES), instance, stream_resources(store_root, pubsub),
                        results_subscription=subscription)
    assert result.success
    for asset in ("waveform", "mel_spectrogram", "mfcc"):
        assert materialized_partitions(instance, asset) == {catalogue_ids[3]}, asset
    assert catalogue_ids[3] in instance.get_dynamic_partitions(PARTITIONS_NAME)
    assert pubsub.pull(10, wait_s=1.0, subscription_path=path) == []  # both acknowledged


def test_ids_finished_together_are_stored_one_write_per_level_and_point_at_their_upstream(
        tmp_path, monkeypatch, store_root, catalogue_ids, pubsub):
    """Two IDs that finish together: their materializations are stored in one write per
    dependency level (waveform, mel_spectrogram, mfcc: three), on the project's event log; each
    downstream materialization points at its own ID's upstream materialization; then both
    messages are acknowledged, in one request."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    batches: list[list[str]] = []
    original = KeptOpenSqliteEventLogStorage.store_event_batch
    monkeypatch.setattr(KeptOpenSqliteEventLogStorage, "store_event_batch", lambda self, events: (
        batches.append([e.get_dagster_event().asset_key.to_user_string() for e in events]), original(self, events))[1])
    ids = catalogue_ids[:2]
    publish(pubsub, *(MediaEvent(i) for i in ids))
    pulled: list[Held] = []
    intake = Intake(pubsub.subscriber, pubsub.subscription_path, 2, 60, pulled.append)
    deadline = time.monotonic() + 30
    while len(pulled) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    intake.stop()
    acks: list[list[str]] = []
    acknowledge = pubsub.subscriber.acknowledge
    monkeypatch.setattr(pubsub.subscriber, "acknowledge", lambda request: (
        acks.append(request["ack_ids"]), acknowledge(request=request))[1])

    @dg.op(required_resource_keys={"media_storage", "beam_runner", "pubsub"})
    def finish_two(context):
        stream = MediaStream(context, FEATURES, StreamConfig(), retry_topic=None)
        work = ProcessEventFn(stream.tasks, stream.store)
        events = [parse_event(m.data, stream.known_assets) for m in pulled]
        context.instance.add_dynamic_partitions(PARTITIONS_NAME, [e.media_id for e in events])
        stream.report([(m, e, work.results_for(e)) for m, e in zip(pulled, events, strict=True)])

    with dg.instance_for_test(overrides={"event_log_storage": {
            "module": "resources.sqlite_event_log", "class": "KeptOpenSqliteEventLogStorage"}}) as instance:
        job = dg.GraphDefinition(name="finish_two", node_defs=[finish_two]).to_job(executor_def=dg.in_process_executor)
        assert job.execute_in_process(instance=instance, resources=stream_resources(store_root, pubsub)).success
        assert batches == [["waveform"] * 2, ["mel_spectrogram"] * 2, ["mfcc"] * 2]
        assert [sorted(a) for a in acks] == [sorted(m.ack_id for m in pulled)]
        assert pending(pubsub) == 0
        for media_id in ids:
            latest = {asset: instance.fetch_materializations(dg.AssetRecordsFilter(
                asset_key=dg.AssetKey(asset), asset_partitions=[media_id]), limit=1).records[0]
                for asset in ("waveform", "mel_spectrogram", "mfcc")}
            for downstream, upstream in (("mel_spectrogram", "waveform"), ("mfcc", "mel_spectrogram")):
                tags = latest[downstream].asset_materialization.tags
                assert tags[INPUT_EVENT_POINTER_TAG_PREFIX + upstream] == str(latest[upstream].storage_id)

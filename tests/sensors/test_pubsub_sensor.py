"""The Pub/Sub sensor against the real emulator: publish -> partition -> run -> stored outputs."""

import os
import threading
import time
import uuid

import dagster as dg
import pytest

from klio_assets.builtin.audio import AUDIO_ASSETS
from klio_core.wire import MediaEvent, encode_event
from klio_dev.pubsub_emulator import PubSubEmulator
from pipelines.graph import asset_graph
from resources.dagster_tags import RANGE_END_TAG, RANGE_START_TAG, SENSOR_NAME_TAG
from resources.pubsub import PubSubResource, message_key
from sensors.pubsub_sensor import TickState, build_pubsub_sensor
from tests.conftest import materialized_partitions, observations, pinged, run_summary
from tests.klio_core.test_wire_decoding import bytes_field, varint_field
from tests.sensors.conftest import MEDIA_ASSETS, Daemon, pull_dead_letters

pytestmark = pytest.mark.slow  # starts the Pub/Sub emulator

ALL_ASSETS = {"waveform", "spectrogram", "mel_spectrogram", "mfcc", "waveform_plot",
              "spectrogram_plot", "mel_spectrogram_plot", "mfcc_plot"}
ACK_DEADLINE_S = 10


def publish(pubsub, *bodies: bytes) -> list[str]:
    return pubsub.publish(pubsub.topic, [(b, {}) for b in bodies])


def output(store_root, asset, media_id):
    suffix = {"waveform": ".wav"}.get(asset, ".png" if asset.endswith("_plot") else ".npy")
    return os.path.join(store_root, asset, media_id + suffix)


@pytest.fixture
def daemon(instance, pubsub, resources):
    return Daemon(instance, pubsub, resources)


def test_every_format_becomes_partitions_and_batched_top_down_runs(daemon, pubsub, instance, store_root, catalogue_ids):
    a, b, c, d = catalogue_ids
    v1 = bytes_field(2, bytes_field(1, c.encode())) + varint_field(3, 1)  # data.entity_id, version V1
    publish(pubsub, encode_event(MediaEvent(a), "klio"), encode_event(MediaEvent(b), "json"), v1,
            encode_event(MediaEvent(d), "text"))

    requests = daemon.tick()
    assert instance.get_dynamic_partitions("media_ids") == [a, b, c, d]
    assert [(r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG])
            for r in requests] == [(a, b), (c, d)]  # 4 IDs, at most 2 per run
    assert all({k.to_user_string() for k in r.asset_selection} == ALL_ASSETS for r in requests)
    assert all(result.success for result in daemon.execute(requests))
    for asset in ALL_ASSETS:
        assert materialized_partitions(instance, asset) == {a, b, c, d}, asset

    # The next tick acknowledges them: nothing is redelivered after the ack deadline.
    assert daemon.tick() == []
    time.sleep(ACK_DEADLINE_S + 2)
    assert daemon.tick() == []
    assert len(daemon.requests) == 2


def test_bottom_up_runs_only_the_recipient_and_its_missing_inputs(daemon, pubsub, instance, store_root, catalogue_ids):
    media_id = catalogue_ids[0]
    publish(pubsub, encode_event(MediaEvent(media_id, recipients=("mfcc",))))
    [request] = daemon.tick()
    assert {k.to_user_string() for k in request.asset_selection} == {"waveform", "mel_spectrogram", "mfcc"}
    assert daemon.execute([request])[0].success
    for asset in ("waveform", "mel_spectrogram", "mfcc"):
        assert os.path.exists(output(store_root, asset, media_id))
    for sibling in ALL_ASSETS - {"waveform", "mel_spectrogram", "mfcc"}:
        assert not os.path.exists(output(store_root, sibling, media_id)), sibling
        assert materialized_partitions(instance, sibling) == set()

    # Bottom-up again for a plot: existing upstream outputs are skipped, not recomputed.
    before = os.stat(output(store_root, "mfcc", media_id)).st_mtime_ns
    publish(pubsub, encode_event(MediaEvent(media_id, recipients=("mfcc_plot",))))
    [request] = daemon.tick()
    [result] = daemon.execute([request])
    assert result.success
    assert os.path.exists(output(store_root, "mfcc_plot", media_id))
    assert os.stat(output(store_root, "mfcc", media_id)).st_mtime_ns == before
    assert run_summary(instance, "mfcc", result.run_id)["skipped_media_ids"] == [media_id]
    assert not os.path.exists(output(store_root, "spectrogram", media_id))


def test_existing_outputs_are_kept_unless_forced(daemon, pubsub, instance, store_root, catalogue_ids):
    media_id = catalogue_ids[1]
    path = output(store_root, "waveform", media_id)
    for force in (False, False, True):
        publish(pubsub, encode_event(MediaEvent(media_id, force=force, recipients=("waveform",))))
        [request] = daemon.tick()
        before = os.stat(path).st_mtime_ns if os.path.exists(path) else None
        [result] = daemon.execute([request])
        assert result.success
        after = os.stat(path).st_mtime_ns
        if before is None or force:
            assert after != before
        else:
            assert after == before
            assert run_summary(instance, "waveform", result.run_id)["skipped"] == 1
    assert len(instance.fetch_materializations(dg.AssetKey("waveform"), limit=10).records) == 2


def test_ping_processes_nothing_and_records_where_the_event_reached(daemon, pubsub, instance, store_root, catalogue_ids):
    media_id = catalogue_ids[2]
    publish(pubsub, encode_event(MediaEvent(media_id, ping=True, recipients=("mel_spectrogram",))))
    [request] = daemon.tick()
    assert request.tags["klio/ping"] == "true"
    assert request.asset_check_keys == []  # so the Checks tab keeps each check's last real evaluation
    assert daemon.execute([request])[0].success
    for asset in ("waveform", "mel_spectrogram"):
        assert media_id in pinged(instance, asset)
        assert media_id not in observations(instance, asset)  # nothing on the partition itself
        assert not os.path.exists(output(store_root, asset, media_id))
    assert pinged(instance, "mfcc") == set()
    assert materialized_partitions(instance, "waveform") == set()
    checks = [key for key in MEDIA_ASSETS.check_keys if key.asset_key.path[0] in ("waveform", "mel_spectrogram")]
    assert checks and all(not instance.event_log_storage.get_asset_check_execution_history(key, limit=1)
                          for key in checks), "a ping ran no check"


def test_bad_events_are_acked_dead_lettered_and_do_not_block_good_ones(daemon, pubsub, instance, catalogue_ids):
    bad = {
        b"\xff\xfe\x00\x01": "undecodable message",
        b"  ": "empty media ID",
        b"x" * 300: "300 characters",
        b"../secrets": "'..' path segment",
        encode_event(MediaEvent("track-1", recipients=("loudness",)), "json"): "unknown asset(s) in recipients",
    }
    good = catalogue_ids[3]
    publish(pubsub, *bad, encode_event(MediaEvent(good, recipients=("waveform",))))
    pubsub.publish(pubsub.topic, [(b"", {"origin": "an empty body; Pub/Sub needs data or attributes"})])
    bad[b""] = "empty media ID"

    [request] = daemon.tick()
    assert request.tags[RANGE_START_TAG] == good
    assert instance.get_dynamic_partitions("media_ids") == [good]
    letters = {m.message.data: m.message.attributes for m in pull_dead_letters(pubsub)}
    assert set(letters) == set(bad)
    for data, reason in bad.items():
        assert reason in letters[data]["error"]
        assert letters[data]["source_subscription"] == pubsub.subscription
    assert daemon.execute([request])[0].success

    daemon.tick()  # acks the good one
    time.sleep(ACK_DEADLINE_S + 2)
    assert pubsub.pull(100) == []  # bad ones were acked at once, the good one by the next tick


def test_crash_before_dagster_records_the_tick_redelivers_and_runs_once(daemon, pubsub, catalogue_ids):
    ids = catalogue_ids[:3]
    publish(pubsub, *(encode_event(MediaEvent(i, recipients=("waveform",))) for i in ids))

    lost = daemon.evaluate()  # the process dies here: nothing of this tick is recorded
    assert len(lost.run_requests) == 2
    assert daemon.tick() == []  # still within the ack deadline: not redelivered yet
    time.sleep(ACK_DEADLINE_S + 2)

    requests = daemon.tick()  # redelivered
    assert sorted(i for r in requests for i in _ids(r)) == sorted(ids)
    daemon.tick()  # acks
    time.sleep(ACK_DEADLINE_S + 2)
    assert daemon.tick() == []
    assert len(daemon.requests) == 2  # exactly one run request per batch, no duplicates


def test_crash_after_recording_but_before_acking_does_no_duplicate_work(daemon, pubsub, catalogue_ids):
    ids = catalogue_ids[:2]
    publish(pubsub, *(encode_event(MediaEvent(i, recipients=("waveform",))) for i in ids))
    first = daemon.tick()  # recorded by Dagster...
    assert len(first) == 1
    # ...and the process dies before the next tick acknowledges: the ack deadline passes.
    time.sleep(ACK_DEADLINE_S + 2)
    redelivered = daemon.pubsub.pull(100)
    assert sorted(message_key(m.message) for m in redelivered) == sorted(TickState.load(daemon.cursor).pending_keys)
    daemon.pubsub.subscriber.modify_ack_deadline(request={  # hand them back at once
        "subscription": pubsub.subscription_path, "ack_ids": [m.ack_id for m in redelivered],
        "ack_deadline_seconds": 0})

    assert daemon.tick() == []  # recognised as recorded: acked, no new run request
    time.sleep(ACK_DEADLINE_S + 2)
    assert daemon.tick() == [] and pubsub.pull(100) == []
    assert len(daemon.requests) == 1


def test_a_new_emulator_reuses_message_ids_and_no_event_is_lost(instance, resources, catalogue_ids, monkeypatch):
    """A fresh emulator (or a recreated topic) numbers its messages from 1 again. Events recorded
    under the old numbers must not hide new events that reuse them."""
    first, second = catalogue_ids[:2]
    daemon = None
    for incarnation, ids in enumerate(([first], [second, first])):
        with PubSubEmulator(project="klio-test") as emulator:
            monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
            pubsub = PubSubResource(project="klio-test", topic="events", subscription="events-sub",
                                    ack_deadline_seconds=10)
            pubsub.ensure_exists()
            if daemon is None:
                daemon = Daemon(instance, pubsub, resources)
            daemon.pubsub = pubsub
            message_ids = publish(pubsub, *(encode_event(MediaEvent(i, recipients=("waveform",))) for i in ids))
            assert message_ids[0] == "1"  # the same message ID in both emulators
            requests = daemon.tick()  # the second time, the old tick's ack IDs are unknown: logged, not fatal
            assert sorted(i for r in requests for i in _ids(r)) == sorted(ids), incarnation
            daemon.tick()
    assert _ids(daemon.requests[0]) == [first]
    # the second tick looked its IDs up instead of listing the catalogue: the registered one is
    # not known to sit next to the new one, so each has a run of its own
    assert sorted(_ids(r) for r in daemon.requests[1:]) == sorted([[first], [second]])
    assert instance.get_dynamic_partitions("media_ids") == [first, second]


def test_carried_over_messages_keep_their_identity(daemon, pubsub, catalogue_ids):
    """What klio-dev drains from a stopped emulator and publishes to the next keeps its key: a
    message the sensor already recorded is recognised, one it never saw is planned."""
    seen, unseen = catalogue_ids[:2]
    publish(pubsub, encode_event(MediaEvent(seen, recipients=("waveform",))))
    assert len(daemon.tick()) == 1  # recorded; its ack is pending when the stack stops
    time.sleep(ACK_DEADLINE_S + 2)  # the emulator would hand it out again by now
    publish(pubsub, encode_event(MediaEvent(unseen, recipients=("waveform",))))

    drained = pubsub.drain(wait_s=ACK_DEADLINE_S + 2)  # what it pulls comes back meanwhile: once each
    assert len(drained) == 2
    pubsub.publish(pubsub.topic, drained)  # as the next emulator receives them: new IDs, same keys
    requests = daemon.tick()
    assert [_ids(r) for r in requests] == [[unseen]]


def test_the_cursor_stays_small_after_100000_messages(pubsub, instance):
    """Remembered keys expire with time, not count. 100,000 distinct messages at 20 a second
    (the fastest stream the project targets), ticks 5 s apart on a simulated clock: the cursor
    holds about the last two minutes of keys, and nothing once the stream is quiet."""
    from sensors.pubsub_sensor import evaluate_tick

    total, per_tick, tick_s, grace_s = 100_000, 100, 5, 120
    for start in range(0, total, 10_000):
        pubsub.publish(pubsub.topic, [(f"stream-{i}".encode(), {}) for i in range(start, start + 10_000)])
    now, cursor, sizes, remembered, planned = time.time(), None, [], [], 0

    def tick():
        result = evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor), pubsub,
                               {"waveform": ()}, max_ids_per_run=500, max_messages=per_tick,
                               redelivery_grace_s=grace_s, clock=lambda: now)
        return result, TickState.load(result.cursor)

    for _ in range(total // per_tick):
        result, state = tick()
        cursor, now = result.cursor, now + tick_s
        planned += len(result.run_requests or [])
        sizes.append(len(cursor))
        remembered.append(len(state.remembered))
    assert len(state.pending_keys) == per_tick and planned == total // per_tick
    window = (grace_s // tick_s + 2) * per_tick
    assert max(remembered) <= window, f"{max(remembered)} keys remembered; the grace window holds {window}"
    for _ in range(grace_s // tick_s + 2):  # a quiet spell longer than the grace
        result, state = tick()
        cursor, now = result.cursor, now + tick_s
    assert state.remembered == {}
    assert len(cursor) < 200, f"idle cursor is {len(cursor)} bytes after {total} messages"
    assert max(sizes) < 64_000, f"largest cursor {max(sizes)} bytes at {per_tick // tick_s} messages/s"
    print(f"cursor after {total} messages: largest {max(sizes)} bytes, idle {len(cursor)} bytes")


def _ids(request: dg.RunRequest) -> list[str]:
    start, end = request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]
    return [start] if start == end else [start, end]


def test_a_tick_takes_an_event_published_while_it_waits(daemon, instance, pubsub, catalogue_ids):
    """A tick that finds no message waits for the first one (up to ``wait_for_events_s``), so an
    event published meanwhile becomes a run in this tick, not the next."""
    assert daemon.tick() == []  # the test sensor does not wait: an empty subscription, no runs
    waiting = build_pubsub_sensor(asset_graph(AUDIO_ASSETS), max_ids_per_run=2, wait_for_events_s=60)
    publisher = threading.Timer(0.5, publish, (pubsub, encode_event(MediaEvent(catalogue_ids[0]))))
    publisher.start()
    result = waiting(dg.build_sensor_context(instance=instance, resources={"pubsub": pubsub}))
    publisher.join()
    [request] = result.run_requests
    assert list(result.dynamic_partitions_requests[0].partition_keys) == [catalogue_ids[0]]
    assert catalogue_ids[0] in request.tags.values()


def queued_run(instance, sensor_name: str) -> str:
    """A run the sensor requested that has not been launched (created, not yet started)."""
    run = dg.DagsterRun(job_name="media_job", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.NOT_STARTED,
                        tags={SENSOR_NAME_TAG: sensor_name})
    instance.add_run(run)
    return run.run_id


def test_events_wait_in_pubsub_while_a_run_of_the_sensor_is_queued(instance, pubsub, catalogue_ids):
    """Under load, new events stay in Pub/Sub while the sensor's last run waits in the queue;
    the first tick after it starts takes them together, in as few runs as the cap allows."""
    sensor = build_pubsub_sensor(asset_graph(AUDIO_ASSETS), max_ids_per_run=10, wait_for_events_s=0)
    context = dg.build_sensor_context(instance=instance, resources={"pubsub": pubsub})
    waiting = queued_run(instance, "pubsub_media_events")
    queued_run(instance, "another_sensor")  # another sensor's queued run does not hold this one
    publish(pubsub, *(encode_event(MediaEvent(m)) for m in catalogue_ids[:2]))
    held = sensor(context)
    assert not held.run_requests and "still wait in the queue" in held.skip_reason.skip_message
    publish(pubsub, *(encode_event(MediaEvent(m)) for m in catalogue_ids[2:]))
    instance.delete_run(waiting)  # it started and left the queue
    taken = sensor(dg.build_sensor_context(instance=instance, cursor=held.cursor, resources={"pubsub": pubsub}))
    [request] = taken.run_requests  # all four IDs, in one run
    assert list(taken.dynamic_partitions_requests[0].partition_keys) == catalogue_ids


def test_new_content_is_planned_without_listing_the_catalogue(pubsub, instance, monkeypatch):
    """A tick looks up the IDs it received; it lists ``media_ids`` (1.8 s at 1,000,000 IDs) only
    when two or more of them are registered already, to put neighbours into one run."""
    from sensors.pubsub_sensor import evaluate_tick

    instance.add_dynamic_partitions("media_ids", ["old-1", "old-2", "old-3"])
    listings = []
    listing = instance.get_dynamic_partitions
    monkeypatch.setattr(instance, "get_dynamic_partitions", lambda name: (listings.append(name), listing(name))[1])

    def tick(*ids: str) -> dg.SensorResult:
        publish(pubsub, *(encode_event(MediaEvent(m, force=True)) for m in ids))
        result = evaluate_tick(dg.build_sensor_context(instance=instance), pubsub, {"waveform": ()},
                               max_ids_per_run=500, max_messages=100, wait_s=2)
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        pubsub.acknowledge(TickState.load(result.cursor).pending_acks, pubsub.sensor_subscription_path)
        return result

    quiet = evaluate_tick(dg.build_sensor_context(instance=instance), pubsub, {"waveform": ()},
                          max_ids_per_run=500, max_messages=100)
    assert quiet.skip_reason and listings == []
    first = tick("new-1", "new-2", "old-2")
    assert listings == []
    assert sorted(map(_ids, first.run_requests)) == [["new-1", "new-2"], ["old-2"]]
    assert [list(r.partition_keys) for r in first.dynamic_partitions_requests] == [["new-1", "new-2"]]
    again = tick("old-1", "old-3", "old-2", "new-3")
    assert listings == ["media_ids"]
    assert sorted(map(_ids, again.run_requests)) == [["new-3"], ["old-1", "old-3"]]  # old-1..old-3 is one range

"""The sensor daemon SIGKILLed while it ingests a few hundred events: none lost, none planned
twice, each bad one dead-lettered once. The daemon runs on its own here (``dagster dev`` stops
altogether when its daemon dies); the emulator and the instance stay up, as in production."""

import os
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest
import yaml

from klio_core.wire import MediaEvent, encode_event
from klio_dev.pubsub_emulator import PubSubEmulator
from klio_dev.stack import ROOT
from resources.dagster_tags import RANGE_END_TAG, RANGE_START_TAG, SENSOR_NAME_TAG
from resources.pubsub import PubSubResource

pytestmark = [pytest.mark.slow, pytest.mark.faults]

GOOD, BAD, KILLS = 270, 30, 3


def start_daemon(home: str, env: dict, log) -> subprocess.Popen:
    return subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "dagster-daemon"), "run",
                             "-w", os.path.join(ROOT, "workspace.yaml")], cwd=home, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def ids_in_runs(instance) -> list[str]:
    """Every media ID of every sensor run, once per run that covers it."""
    keys = instance.get_dynamic_partitions("media_ids")
    index = {key: i for i, key in enumerate(keys)}
    covered = []
    for run in instance.get_runs(dg.RunsFilter(tags={SENSOR_NAME_TAG: "pubsub_media_events"})):
        start, end = run.tags[RANGE_START_TAG], run.tags[RANGE_END_TAG]
        covered.extend(keys[index[start]:index[end] + 1])
    return covered


def test_a_daemon_killed_during_ingestion_loses_nothing_and_plans_nothing_twice(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    with open(os.path.join(ROOT, "dagster.yaml")) as f:
        settings = yaml.safe_load(f)
    settings["concurrency"]["runs"]["max_concurrent_runs"] = 0  # runs are queued, none executes
    (home / "dagster.yaml").write_text(yaml.safe_dump(settings))
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    with PubSubEmulator(project="klio-dev") as emulator, open(tmp_path / "daemon.log", "w") as log:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
        pubsub = PubSubResource(project="klio-dev", dead_letter_topic="klio-media-events-dead-letter",
                                ack_deadline_seconds=15)
        pubsub.ensure_exists()
        letters = pubsub.subscriber.subscription_path("klio-dev", "dead-letters")
        pubsub.subscriber.create_subscription(
            request={"name": letters, "topic": pubsub.topic_path(pubsub.dead_letter_topic)})
        env = {**os.environ, "KLIO_DATA_ROOT": str(tmp_path / "data"), "KLIO_PUBSUB_PROJECT": "klio-dev",
               "KLIO_PUBSUB_ACK_DEADLINE_S": "15", "KLIO_MAX_IDS_PER_RUN": "20",
               "KLIO_SENSOR_HOLD_WHILE_QUEUED": "false"}  # the queue never moves here
        good = [f"track-{i:03d}" for i in range(GOOD)]
        bad = [f"../escape-{i}" for i in range(BAD)]  # path-unsafe IDs: each must be dead-lettered
        bodies = [encode_event(MediaEvent(m, recipients=("waveform",))) for m in good] + [b.encode() for b in bad]
        order = sorted(range(len(bodies)), key=lambda i: (i * 7919) % len(bodies))  # good and bad mixed
        batches = [[bodies[i] for i in order[k::KILLS + 1]] for k in range(KILLS + 1)]

        daemon = start_daemon(str(home), env, log)
        kills = 0
        try:
            with dg.DagsterInstance.get() as instance:
                for batch in batches:
                    seen = len(instance.get_dynamic_partitions("media_ids"))
                    pubsub.publish(pubsub.topic, [(b, {}) for b in batch])
                    if kills == KILLS:
                        break
                    deadline = time.monotonic() + 120  # kill once this batch's first tick is under way
                    while len(instance.get_dynamic_partitions("media_ids")) == seen and time.monotonic() < deadline:
                        time.sleep(0.05)
                    daemon.send_signal(signal.SIGKILL)
                    daemon.wait()
                    kills += 1
                    daemon = start_daemon(str(home), env, log)
                deadline = time.monotonic() + 300
                while set(ids_in_runs(instance)) != set(good) and time.monotonic() < deadline:
                    time.sleep(1)
                time.sleep(40)  # past the ack deadline twice: redeliveries would have been planned
                covered = ids_in_runs(instance)
        finally:
            daemon.send_signal(signal.SIGKILL)
            daemon.wait()

        lost = sorted(set(good) - set(covered))
        twice = sorted({m for m in covered if covered.count(m) > 1})
        dead = []
        while response := pubsub.subscriber.pull(request={"subscription": letters, "max_messages": 1000,
                                                          "return_immediately": True}, timeout=10).received_messages:
            dead.extend(response)
            pubsub.subscriber.acknowledge(request={"subscription": letters, "ack_ids": [m.ack_id for m in response]})
        dead_ids = [m.message.data.decode() for m in dead]
        figures = (f"{GOOD} good and {BAD} bad events, daemon SIGKILLed {kills} times: {len(lost)} lost, "
                   f"{len(twice)} planned twice, {len(dead)} dead letters for {len(set(dead_ids))} bad events")
        assert (lost, twice) == ([], []), figures + f"; lost {lost[:10]}, twice {twice[:10]}"
        assert sorted(dead_ids) == sorted(bad), figures
        assert kills == KILLS, figures

"""klio-verify: what the deployment needs is listed, missing parts are named, --create makes them.
Against the real Pub/Sub and GCS emulators, through the installed command."""

import os
import subprocess
import sys
import uuid

import pytest

pytestmark = pytest.mark.slow  # starts the emulators


def verify(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(os.path.dirname(sys.executable), "klio-verify"), *args],
                          env=env, capture_output=True, text=True, timeout=120)


def states(output: str) -> dict[str, str]:
    """what -> state, from the printed lines ("missing  input topic  projects/...")."""
    out = {}
    for line in output.splitlines():
        parts = line.split(None, 1)
        if parts and parts[0] in ("ok", "missing", "failing"):
            out[parts[1].split("  ")[0].strip()] = parts[0]
    return out


@pytest.fixture
def env(emulator, gcs_emulator, tmp_path):
    suffix = uuid.uuid4().hex[:8]
    return {**os.environ, "PUBSUB_EMULATOR_HOST": emulator.host, "KLIO_PUBSUB_PROJECT": "klio-test",
            "KLIO_PUBSUB_TOPIC": f"in-{suffix}", "KLIO_PUBSUB_SUBSCRIPTION": f"in-{suffix}-sub",
            "KLIO_PUBSUB_DEAD_LETTER_TOPIC": f"dead-{suffix}", "KLIO_PUBSUB_OUTPUT_TOPIC": f"out-{suffix}",
            "STORAGE_EMULATOR_HOST": gcs_emulator, "KLIO_DATA_ROOT": f"gs://bucket-{suffix}/media",
            "DAGSTER_HOME": str(tmp_path)}


def test_missing_resources_are_named_then_created(env):
    before = verify(env)
    assert before.returncode == 1, before.stdout + before.stderr
    assert states(before.stdout) == {"storage bucket": "missing", "input topic": "missing",
                                     "dead-letter topic": "missing", "output topic": "missing",
                                     "subscription": "missing"}
    assert "0 of 5 ok; 5 missing or failing" in before.stdout

    created = verify(env, "--create")
    assert created.returncode == 0, created.stdout + created.stderr
    assert created.stdout.count("created  ") == 5
    after = verify(env)
    assert after.returncode == 0 and set(states(after.stdout).values()) == {"ok"}, after.stdout


def test_a_subscription_on_another_topic_is_reported(env, monkeypatch):
    from resources.pubsub import PubSubResource

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", env["PUBSUB_EMULATOR_HOST"])
    PubSubResource(project="klio-test", topic=f"{env['KLIO_PUBSUB_TOPIC']}-other",
                   subscription=env["KLIO_PUBSUB_SUBSCRIPTION"]).ensure_exists()
    result = verify(env, "--create")
    assert result.returncode == 1
    assert states(result.stdout)["subscription"] == "failing"
    assert f"is on projects/klio-test/topics/{env['KLIO_PUBSUB_TOPIC']}-other, not on the input topic" in result.stdout


def test_a_local_root_without_pubsub(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("KLIO_PUBSUB_PROJECT", "PUBSUB_EMULATOR_HOST")}
    env.update(KLIO_DATA_ROOT=str(tmp_path / "data"), DAGSTER_HOME=str(tmp_path))
    before = verify(env)
    assert before.returncode == 1
    assert states(before.stdout) == {"storage root": "missing", "source location": "missing"}
    assert "Pub/Sub not checked" in before.stdout
    assert verify(env, "--create").returncode == 0
    assert os.path.isdir(tmp_path / "data" / "sources")

"""The commands as a user meets them: ``--help`` loads no heavy library, a mistake or a stack
that is down is refused with one line and a non-zero exit before anything is sent, and a second
terminal finds the running stack with nothing exported."""

import os
import socket
import subprocess
import sys

import pytest

from klio_core.stack_file import Stack, write_stack
from klio_dev.pubsub_emulator import free_port
from resources.pubsub import PubSubResource

COMMANDS = ["klio_cli.publish", "klio_cli.backfill", "klio_cli.register", "klio_cli.verify", "klio_cli.profile",
            "klio_dev.cli"]
HEAVY = ("dagster", "apache_beam", "librosa")
BIN = os.path.dirname(sys.executable)


@pytest.mark.parametrize("module", COMMANDS)
def test_help_loads_no_dagster_beam_or_librosa(module):
    probe = (f"import sys, {module} as m\ntry:\n    m.main(['--help'])\nexcept SystemExit:\n    pass\n"
             f"print(sorted({{n.split('.')[0] for n in sys.modules}} & {set(HEAVY)!r}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout.lower()
    assert done.stdout.strip().splitlines()[-1] == "[]", f"{module} --help loaded {done.stdout.splitlines()[-1]}"


def second_shell(home, **extra) -> dict:
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "DAGSTER_HOME": str(home), **extra}


def run(command: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(BIN, command), *args], env=env, capture_output=True, text=True, timeout=120)


def test_publish_refuses_invalid_ids_before_sending_anything(tmp_path):
    done = run("klio-publish", "good-1", "a...b", "", env=second_shell(tmp_path))
    assert done.returncode == 1
    assert done.stderr.startswith("klio-publish: nothing published: 2 of 3 media IDs are not valid: 'a...b'")
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_publish_to_a_stack_that_is_down_says_so(tmp_path):
    port = free_port()  # nothing listens there
    done = run("klio-publish", "track-1", env=second_shell(tmp_path, PUBSUB_EMULATOR_HOST=f"127.0.0.1:{port}"))
    assert done.returncode == 1
    assert f"nothing published: no Pub/Sub emulator answers at 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_backfill_on_a_stack_that_is_down_says_so(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    done = run("klio-backfill", "track-1", env=second_shell(tmp_path, KLIO_WEBSERVER_URL=url))
    assert done.returncode == 1
    assert f"klio-backfill: no Dagster webserver answers at {url}" in done.stderr
    assert "Traceback" not in done.stderr


def test_klio_dev_refuses_a_taken_port_naming_its_setting(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        env = second_shell(tmp_path, KLIO_MEDIA_PORT=str(taken), KLIO_PUBSUB_EMULATOR_PORT=str(free_port()),
                           KLIO_DATA_ROOT=str(tmp_path / "data"))
        done = run("klio-dev", "-p", str(free_port()), env=env)
    assert done.returncode == 2
    assert f"klio-dev: port {taken} is taken (KLIO_MEDIA_PORT)" in done.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was written


@pytest.mark.slow
def test_a_second_terminal_publishes_to_the_running_stack_with_nothing_exported(emulator, tmp_path, monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
    pubsub = PubSubResource(project="klio-dev", topic="front-door", subscription="front-door-sub")
    pubsub.ensure_exists()
    write_stack(str(tmp_path), Stack(pubsub_emulator_host=emulator.host, pubsub_topic="front-door"))  # as klio-dev
    done = run("klio-publish", "track-1", "track-2", "--force", env=second_shell(tmp_path))
    assert done.returncode == 0, done.stderr
    assert f"published 2 events to projects/klio-dev/topics/front-door (emulator {emulator.host})" in done.stdout
    from klio_core.wire import parse_event

    got = [parse_event(data, frozenset()) for data, _ in pubsub.drain(wait_s=2)]
    assert sorted((e.media_id, e.force) for e in got) == [("track-1", True), ("track-2", True)]

"""Which stack a command talks to (``klio_core.stack_file``): the file ``klio-dev`` writes, while
its writer lives, under any variable that is set."""

import json
import os
import subprocess
import sys

from klio_core.stack_file import STACK_FILE, Stack, find_stack, remove_stack, stack_environ, write_stack

RUNNING = Stack(webserver_url="http://127.0.0.1:3200", pubsub_emulator_host="127.0.0.1:8095", data_root="/srv/data")


def test_a_second_terminal_finds_the_stack_from_its_file_alone(tmp_path):
    write_stack(str(tmp_path), RUNNING)
    stack = find_stack({"DAGSTER_HOME": str(tmp_path)})
    assert (stack.webserver_url, stack.pubsub_emulator_host, stack.project, stack.data_root) == (
        "http://127.0.0.1:3200", "127.0.0.1:8095", "klio-dev", "/srv/data")
    assert stack.source == os.path.join(tmp_path, STACK_FILE)


def test_variables_override_the_file_and_a_real_project_drops_its_emulator(tmp_path):
    write_stack(str(tmp_path), RUNNING)
    stack = find_stack({"DAGSTER_HOME": str(tmp_path), "KLIO_WEBSERVER_URL": "http://elsewhere:3000",
                        "KLIO_PUBSUB_PROJECT": "prod-project"})
    assert stack.webserver_url == "http://elsewhere:3000"
    assert (stack.pubsub_project, stack.pubsub_emulator_host) == ("prod-project", None)


def test_the_file_of_a_stack_that_is_gone_is_ignored(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / STACK_FILE).write_text(json.dumps({"webserver_url": "http://127.0.0.1:3200", "pid": int(dead.stdout)}))
    stack = find_stack({"DAGSTER_HOME": str(tmp_path), "KLIO_PUBSUB_EMULATOR_PORT": "8099"})
    assert (stack.source, stack.webserver_url, stack.pubsub_emulator_host) == (
        "defaults", "http://127.0.0.1:3000", "127.0.0.1:8099")


def test_the_code_location_settings_get_the_stacks_pubsub_where_unset(tmp_path):
    write_stack(str(tmp_path), RUNNING)
    environ = stack_environ({"DAGSTER_HOME": str(tmp_path), "KLIO_DATA_ROOT": "/mine"})
    assert (environ["PUBSUB_EMULATOR_HOST"], environ["KLIO_DATA_ROOT"]) == ("127.0.0.1:8095", "/mine")
    assert "PUBSUB_EMULATOR_HOST" not in stack_environ({"DAGSTER_HOME": str(tmp_path / "no-stack")})


def test_only_the_writer_removes_its_file(tmp_path):
    (tmp_path / STACK_FILE).write_text(json.dumps({"pid": 1}))  # another stack's
    remove_stack(str(tmp_path))
    assert (tmp_path / STACK_FILE).exists()
    write_stack(str(tmp_path), RUNNING)
    remove_stack(str(tmp_path))
    assert not (tmp_path / STACK_FILE).exists()

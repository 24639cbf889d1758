"""The README's dev command as a test fixture: start ``scripts/dev.sh`` on free ports, stop it with Ctrl-C."""

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from klio_dev.pubsub_emulator import free_port
from resources.dagster_webserver import DagsterWebserver

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
LOCATION_STATUS = """{ locationStatusesOrError { __typename
  ... on WorkspaceLocationStatusEntries { entries { name loadStatus } } } }"""


def wait_until(condition, timeout_s: float, what: str, log_path: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:  # the server is still starting, or the element is not there yet
            pass
        time.sleep(1)
    with open(log_path) as f:
        tail = f.read()[-4000:]
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; dev log tail:\n{tail}")


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Process:
    pid: int
    parent: int
    session: int
    command: str
    cpu_s: float  # user and system CPU time so far
    ended_children_cpu_s: float  # the same of its children that have ended (and been waited for)


def processes() -> list[Process]:
    """Every process on this machine (read from /proc), skipping those that end meanwhile."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
            cpu_s = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime
            ended_children_cpu_s = (int(fields[13]) + int(fields[14])) / CLOCK_TICKS  # cutime + cstime
            found.append(Process(int(pid), int(fields[1]), int(fields[3]), command, cpu_s, ended_children_cpu_s))
        except (OSError, ValueError, IndexError):  # ended meanwhile, or not ours to read
            continue
    return found


def processes_in_session(sid: int) -> list[str]:
    """The command lines of the processes of session ``sid`` (a stack started in a session of its own)."""
    return [p.command[:200] for p in processes() if p.session == sid]


@dataclass
class DevStack:
    process: subprocess.Popen
    port: int
    emulator_port: int
    data_root: str
    log_path: str
    env: dict

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def media_url(self) -> str:
        """Where ``klio-dev`` serves the data folder."""
        return f"http://127.0.0.1:{self.env['KLIO_MEDIA_PORT']}"

    @property
    def server(self) -> DagsterWebserver:
        return DagsterWebserver(self.url)

    @property
    def second_shell(self) -> dict:
        """The environment of a second terminal beside this stack: nothing of the stack's exported
        but its Dagster home (which a user's ``scripts/dev.sh`` puts where the commands look by
        default, ``klio_core.stack_file.dagster_home``; a test's stack cannot)."""
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
                "DAGSTER_HOME": self.env["DAGSTER_HOME"]}

    def command(self, name: str, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
        """One of the project's commands, run as a user runs it from a second terminal."""
        return subprocess.run([os.path.join(BIN, name), *args], env=self.second_shell, capture_output=True,
                              text=True, timeout=timeout_s)

    def publish(self, *args: str) -> subprocess.CompletedProcess:
        return self.command("klio-publish", *args, timeout_s=120)

    def stop(self, group_timeout_s: float = 30, timeout_s: float = 240) -> tuple[int, list[str]]:
        """Ctrl-C, as a person stops it: SIGINT to the process group. Returns the exit code and the
        command lines still in the group after ``group_timeout_s`` (Dagster's code servers stop on
        their heartbeat a few seconds after ``dagster dev``). Under load ``dagster dev`` may take a
        minute to stop its daemon, and ``klio-dev`` then drains the emulator for 17 s."""
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            returncode = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self._kill_emulator()  # in a session of its own, so the group kill misses it
            raise
        deadline = time.monotonic() + group_timeout_s
        while (survivors := processes_in_session(self.process.pid)) and time.monotonic() < deadline:
            time.sleep(0.5)
        return returncode, survivors

    def _kill_emulator(self) -> None:
        for process in processes():
            if f"127.0.0.1:{self.emulator_port}" in process.command or f"--port={self.emulator_port}" in process.command:
                try:
                    os.kill(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue

    def wait_until_loaded(self, timeout_s: float = 600) -> None:
        try:
            wait_until(lambda: all(e["loadStatus"] == "LOADED" for e in self.server.query(LOCATION_STATUS)[
                "locationStatusesOrError"]["entries"]), timeout_s, "the code locations to load", self.log_path)
        except BaseException:
            self.stop()
            raise

    def emulator_is_down(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.emulator_port)) != 0


def stop_server(process: subprocess.Popen, grace_s: float = 15) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``: a Dagster server maps SIGTERM to its SIGINT
    handling, so where SIGINT is ignored (started from a background job) SIGTERM is too."""
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(30)


MEDIA_TEAM_ONLY = "load_from:\n  - python_module:\n      module_name: klio_assets.definitions\n" \
                  "      location_name: klio_assets\n"
"""A workspace of this project's code location alone (``KLIO_WORKSPACE``), for measuring it
without another team's work on the same cores."""


def start_dev_stack(folder: str, demo_count: int, max_ids_per_run: int, wait: bool = True,
                    streaming: bool = False, sigint: Any = signal.SIG_DFL, workspace: str | None = None) -> DevStack:
    """``scripts/dev.sh`` on free ports with its state in ``folder`` (start it again on the same
    folder to restart it). ``wait``: until the code location has loaded (else call
    ``wait_until_loaded``). ``streaming``: new content goes through the media stream, as
    ``scripts/dev.sh`` does by default; else through a batch run per sensor tick. ``sigint``: the
    SIGINT disposition it starts with (``signal.SIG_IGN``: as a shell starts a background job).
    ``workspace``: the text of a workspace file to load instead of the repository's."""
    port, emulator_port = free_port(), free_port()
    data_root, log_path = os.path.join(folder, "data"), os.path.join(folder, "dev.log")
    env = {**os.environ, "DAGSTER_HOME": os.path.join(folder, "home"), "KLIO_DATA_ROOT": data_root,
           "KLIO_DEMO_COUNT": str(demo_count), "KLIO_MAX_IDS_PER_RUN": str(max_ids_per_run),
           "KLIO_PUBSUB_EMULATOR_PORT": str(emulator_port), "KLIO_MEDIA_PORT": str(free_port()),
           "KLIO_STREAMING": str(streaming).lower()}
    if workspace is not None:
        os.makedirs(folder, exist_ok=True)
        env["KLIO_WORKSPACE"] = os.path.join(folder, "workspace.yaml")
        with open(env["KLIO_WORKSPACE"], "w") as f:
            f.write(workspace)
    for name in ("KLIO_PUBSUB_PROJECT", "PUBSUB_EMULATOR_HOST", "KLIO_MEDIA_URL"):
        env.pop(name, None)
    with open(log_path, "a") as log:
        # Ignored signals are inherited: this process may itself run with SIGINT ignored.
        process = subprocess.Popen(["bash", os.path.join(ROOT, "scripts", "dev.sh"), "-p", str(port),
                                    "-h", "127.0.0.1"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))
    stack = DevStack(process, port, emulator_port, data_root, log_path, env)
    if wait:
        stack.wait_until_loaded()
    return stack

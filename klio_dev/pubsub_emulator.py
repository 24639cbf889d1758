"""The Google Cloud CLI's Pub/Sub emulator as a managed child process (for dev, tests, benchmarks).

    with PubSubEmulator(project="klio-dev") as emulator:
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host   # or pass it to a child's env

It runs in its own process group so that stopping it also stops the Java server that the
``gcloud`` wrapper starts.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time


class EmulatorError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PubSubEmulator:
    def __init__(self, project: str = "klio-dev", port: int | None = None, startup_timeout_s: float = 60.0):
        self.project = project
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.startup_timeout_s = startup_timeout_s
        self._process: subprocess.Popen | None = None
        self._data_dir: str | None = None

    def start(self) -> "PubSubEmulator":
        gcloud = shutil.which("gcloud")
        if gcloud is None:
            raise EmulatorError("the Pub/Sub emulator needs the Google Cloud CLI ('gcloud' on PATH); "
                                "or set KLIO_PUBSUB_PROJECT to use real Pub/Sub")
        self._data_dir = tempfile.mkdtemp(prefix="pubsub-emulator-")
        log_path = os.path.join(self._data_dir, "emulator.log")
        with open(log_path, "w") as log:
            self._process = subprocess.Popen(
                [gcloud, "beta", "emulators", "pubsub", "start", f"--host-port={self.host}",
                 f"--project={self.project}", f"--data-dir={self._data_dir}", "--quiet"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            with open(log_path) as f:
                if "Server started" in f.read():
                    return self
            time.sleep(0.2)
        with open(log_path) as f:
            output = f.read()[-2000:]
        self.stop()
        raise EmulatorError(f"Pub/Sub emulator did not start on {self.host}:\n{output}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(self._process.pid, sig)
                    self._process.wait(wait_s)
                    break
                except ProcessLookupError:
                    break
                except subprocess.TimeoutExpired:
                    continue
        # The Java server can outlive the wrapper: clear the whole group.
        if self._process is not None:
            try:
                os.killpg(self._process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._process = None
        if self._data_dir:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None

    def __enter__(self) -> "PubSubEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

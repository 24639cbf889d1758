"""Per-item calls that can be stopped: Klio's ``@timeout``, which runs the call in a process of its
own and kills it when time is up.

A Python thread cannot be stopped, so a timed-out call in a thread keeps its core and its memory
until it returns (a decode stuck on a bad file: for ever). ``ChildCaller`` instead sends the call
to a long-lived child process (``python -m pipelines.child_worker``) over a socket; past the
timeout it SIGKILLs the child, which frees its CPU and memory at once, and starts a new child on
the next call. Only calls of assets that set ``timeout_s`` go this way; the cost per call is
pickling the inputs and the value across the socket (docs/BENCHMARKS.md), plus one interpreter
start and the function's imports per child.
"""

import atexit
import os
import pickle
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection

import cloudpickle


class ItemTimeout(Exception):
    pass


class ChildDied(Exception):
    """The child process ended while it ran the call (killed from outside, out of memory...)."""


class ChildCaller:
    """Runs calls in one child process at a time; not thread-safe (one per thread: ``for_this_thread``)."""

    def __init__(self):
        self._process: subprocess.Popen | None = None
        self._connection: Connection | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def call(self, fn, kwargs: dict, timeout_s: float):
        """``fn(**kwargs)`` in the child; ``ItemTimeout`` (and the child killed) past ``timeout_s``."""
        connection = self._connection if self.pid is not None and self._connection is not None else self._start()
        try:
            connection.send_bytes(cloudpickle.dumps((fn, kwargs)))
            ready = connection.poll(timeout_s)
        except OSError as e:
            self.close()
            raise ChildDied(f"the worker process for this call ended ({e})") from e
        if not ready:
            self.close()
            raise ItemTimeout(f"timed out after {timeout_s:g} s (its process was stopped)")
        try:
            ok, payload = pickle.loads(connection.recv_bytes())
        except (EOFError, OSError) as e:
            code = self._process.wait() if self._process else None
            self.close()
            raise ChildDied(f"the worker process for this call ended with exit code {code}") from e
        if ok:
            return payload
        raise payload

    def close(self) -> None:
        """Stop the child now (SIGKILL: it may be stuck in native code) and reap it."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
        if self._connection is not None:
            self._connection.close()
        self._process = self._connection = None

    def _start(self) -> Connection:
        parent, child = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            self._process = subprocess.Popen([sys.executable, "-m", "pipelines.child_worker", str(child.fileno())],
                                             pass_fds=(child.fileno(),), env=env, stdin=subprocess.DEVNULL)
        finally:
            child.close()
        self._connection = Connection(parent.detach())
        return self._connection


_local = threading.local()
_all: list[ChildCaller] = []
_all_lock = threading.Lock()


def for_this_thread() -> ChildCaller:
    """This thread's caller (a Beam worker thread processes one item at a time)."""
    caller = getattr(_local, "caller", None)
    if caller is None:
        caller = _local.caller = ChildCaller()
        with _all_lock:
            _all.append(caller)
    return caller


@atexit.register
def close_all() -> None:
    """Stop every child (they also exit by themselves when this process's end of the socket closes)."""
    with _all_lock:
        for caller in _all:
            caller.close()

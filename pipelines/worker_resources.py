"""Values built once per worker process and reused for every item it processes: a loaded model,
a lookup table, a client (Klio and Beam build them in a DoFn's ``setup()``).

A media asset declares them with ``@media_asset(setup={"model": load_model})``: ``load_model()``
runs the first time a worker actually calls the asset's function (so a run whose IDs are all
skipped or dropped never loads it), and its value is passed as ``model=`` to every call in that
process. The value is kept for the life of the process, not of a DoFn instance: Beam may set up
and tear down a DoFn for every bundle (the DaskRunner does), which would load it again and again.
At exit, or on ``release_all()``, each value with a ``close()`` method is closed. Each build
counts in the task's Beam counter ``<param>_loads``, which the run's summary shows.
"""

import atexit
import threading
from collections.abc import Callable
from typing import Any

from pipelines.metrics import loads_counter, metrics_namespace

_values: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()


def get(task_name: str, param: str, factory: Callable[[], Any]) -> Any:
    """This process's value of ``param`` for ``task_name``, built by ``factory()`` on first use.
    (Keyed by names, not by the factory object: Beam unpickles a new copy of it per DoFn.)"""
    key = (task_name, param)
    with _lock:  # one build per process even when several worker threads ask at once
        if key not in _values:
            from apache_beam.metrics import Metrics  # here: the asset definitions import this module too

            _values[key] = factory()
            Metrics.counter(metrics_namespace(task_name), loads_counter(param)).inc()
        return _values[key]


def release_all() -> None:
    """Close (if they can be closed) and forget every value built in this process."""
    with _lock:
        values = list(_values.values())
        _values.clear()
    for value in values:
        close = getattr(value, "close", None)
        if callable(close):
            close()


atexit.register(release_all)

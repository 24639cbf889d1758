"""The worker side of the local streaming driver: a warm worker process (a ``dask.distributed``
worker of ``klio-dev``) runs one event through a stream's ``ProcessEventFn``.

The DoFn travels pickled with every call (a few kB: the functions go by reference) and is
unpickled and set up once per worker process and stream run, then kept, so a worker keeps its
imports, plot frames and ``setup=`` values from one event to the next.
"""

import threading

import cloudpickle

from klio_core.records import ItemResult
from klio_core.wire import MediaEvent
from pipelines.transforms import ProcessEventFn

_fns: dict[str, ProcessEventFn] = {}
_lock = threading.Lock()
KEPT = 2  # a stream run and its successor overlap while it rotates


def results_for(stream_key: str, pickled_fn: bytes, event: MediaEvent) -> list[ItemResult]:
    """``event``'s results from the stream ``stream_key``'s DoFn in this process."""
    with _lock:
        fn = _fns.get(stream_key)
        if fn is None:
            while len(_fns) >= KEPT:  # the oldest stream run's: it has ended
                del _fns[next(iter(_fns))]
            fn = _fns[stream_key] = cloudpickle.loads(pickled_fn)
            fn.setup()
    return fn.results_for(event)

"""Warm Beam workers on this machine: a local ``dask.distributed`` cluster for the DaskRunner.

With the DirectRunner every run computes in its own fresh process, which pays the imports of
librosa's submodules, the plot frames and any per-worker model again for every run (about 2 s
before the first item of a run, however small the run). ``klio-dev`` starts these worker
processes once instead and points the code location's runs at them; each run's pipeline then
only ships its items to workers that are already warm. One single-threaded worker per core, so
numpy's BLAS and numba do not double-book the cores.

Clean shutdown: leaving the context closes the scheduler and stops every worker process. A
worker that dies mid-run is restarted by its nanny and Dask runs its task again on a live
worker; items already written are fresh by then and skipped, so nothing is done twice.
"""

from collections.abc import Iterator
from contextlib import contextmanager

SINGLE_THREADED = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                          "NUMBA_NUM_THREADS")}


@contextmanager
def local_workers(count: int) -> Iterator[str]:
    """``count`` warm worker processes and their scheduler; yields the scheduler's address (the
    DaskRunner's ``client_address``)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=count, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, env=SINGLE_THREADED) as cluster:
        yield cluster.scheduler_address

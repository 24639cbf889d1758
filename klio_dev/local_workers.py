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

import io
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

SINGLE_THREADED = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                          "NUMBA_NUM_THREADS")}
IDLE_FRIENDLY = {"distributed.admin.tick.interval": "1s", "distributed.worker.memory.monitor-interval": "1s",
                 "distributed.scheduler.work-stealing-interval": "1s"}
# What a worker process starts with: one thread per numeric library, set before the process
# spawns (libraries read them when they load), and without the MALLOC_TRIM_THRESHOLD_=65536 that
# Dask's nannies set by default against fragmentation. Setting it turns off glibc's adaptive mmap
# threshold, so every array above 128 kB is mapped, faulted in and unmapped again: on this
# project's chain, 20 ms of system CPU per media ID on a warm worker (28 against 10; a plain
# process: 6-10). A media worker allocates the same sizes item after item, which glibc's own
# settings serve from memory it keeps.
WORKER_ENVIRONMENT = {"distributed.nanny.pre-spawn-environ": dict(SINGLE_THREADED)}
log = logging.getLogger(__name__)


@contextmanager
def local_workers(count: int, warm_up: Callable[[], None] | None = None) -> Iterator[str]:
    """``count`` warm worker processes and their scheduler; yields the scheduler's address (the
    DaskRunner's ``client_address``). ``warm_up`` runs once on every worker, in the background,
    as an ordinary task (a run's first items queue behind it rather than pay the same costs)."""
    import dask
    from distributed import Client, LocalCluster

    # No profile: nothing reads the statistical profile each worker would otherwise take of its
    # task thread every 10 ms (the nannies hand these settings to their workers). The
    # scheduler's HTTP server (health checks) takes a free port, not Dask's fixed 8787. The
    # periodic callbacks that run every 20-100 ms in every process (the event loop's tick
    # monitor, the memory monitor, work stealing) run once a second: they were most of an idle
    # stack's CPU, and a task here takes hundreds of milliseconds anyway.
    with dask.config.set({"distributed.worker.profile.enabled": False, **IDLE_FRIENDLY, **WORKER_ENVIRONMENT}), \
            LocalCluster(n_workers=count, threads_per_worker=1, processes=True, host="127.0.0.1",
                         dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        if warm_up is not None:
            futures = [client.submit(warm_up, workers=[worker], allow_other_workers=False, pure=False)
                       for worker in client.scheduler_info()["workers"]]
            threading.Thread(target=_report_warm_up, args=(futures,), name="warm-up", daemon=True).start()
        yield cluster.scheduler_address


def _report_warm_up(futures) -> None:
    from distributed import wait

    done = wait(futures).done
    failed = [f.exception() for f in done if f.status == "error"]
    if failed:  # the workers still work; their first items pay what the warm-up would have
        log.warning("warming up the Beam workers failed: %s", failed[0])


def warm_up(media_assets: Sequence, seconds: float = 1.0, sample_rate: int = 22050) -> None:
    """Call every media asset's function once on a short noise clip, as a worker calls it, in
    memory, writing nothing: the process then starts its first real item with librosa's
    submodules imported, numba's kernels compiled, the plot frames made and the ``setup=``
    values built."""
    import numpy as np
    import soundfile

    from klio_core.media_types import SourceMedia
    from pipelines.graph import call_chain

    wav = io.BytesIO()
    noise = 0.1 * np.random.default_rng(0).standard_normal(int(seconds * sample_rate))
    soundfile.write(wav, noise.astype(np.float32), sample_rate, format="WAV")
    call_chain([media.task(None) for media in media_assets], SourceMedia("warm-up", wav.getvalue(), ".wav"))

"""The dev stack's warm Beam workers (``klio_dev.local_workers``): runs reuse the same worker
processes, a worker killed mid-item costs that item only and no item is done twice, and leaving
the context stops every worker process."""

import functools
import os
import time

import numpy as np
import pytest
from distributed import Client

from klio_assets import Waveform, build_media_assets, media_asset
from klio_assets.builtin.audio import waveform
from klio_dev.local_workers import local_workers
from resources.beam import BeamRunner, DaskSettings
from resources.storage import LocalMediaStorage
from tests.conftest import materialize_ids, materialized_partitions

pytestmark = pytest.mark.slow  # starts worker processes


def lines(path) -> list[str]:
    return open(path).read().split("\n")[:-1] if os.path.exists(path) else []


def fragile_asset(log_dir: str):
    """Logs each call and each completion with its pid and a fingerprint of the item; the very
    first call (across all workers) kills its worker process mid-item."""

    @media_asset
    def fragile_peak(waveform: Waveform) -> np.ndarray:
        item = f"{os.getpid()} {float(np.abs(waveform.samples).sum()):.3f}"
        with open(os.path.join(log_dir, "calls"), "a") as f:
            f.write(item + "\n")
        try:
            os.close(os.open(os.path.join(log_dir, "killed"), os.O_CREAT | os.O_EXCL))
            os._exit(1)  # the first call: the worker dies mid-item, as on an OOM kill
        except FileExistsError:
            pass
        with open(os.path.join(log_dir, "done"), "a") as f:
            f.write(item + "\n")
        return np.array([np.abs(waveform.samples).max()], dtype=np.float32)

    return fragile_peak


def test_runs_share_warm_workers_and_a_killed_worker_costs_one_item(instance, store_root, catalogue_ids, tmp_path):
    with local_workers(2) as address:
        worker_pids = _worker_pids(address)
        runner = BeamRunner(runner="DaskRunner", dask=DaskSettings(client_address=address))
        resources = {"media_storage": LocalMediaStorage(root=store_root), "beam_runner": runner}
        assets = build_media_assets([waveform, fragile_asset(str(tmp_path))])

        result = materialize_ids([assets], catalogue_ids, instance, resources)

        assert result.success
        assert materialized_partitions(instance, "fragile_peak") == set(catalogue_ids)
        calls, done = lines(tmp_path / "calls"), lines(tmp_path / "done")
        items = {line.split()[1] for line in done}
        # every item finished exactly once; the one extra call is the item whose worker was killed
        assert (len(done), len(items), len(calls)) == (len(catalogue_ids), len(catalogue_ids), len(catalogue_ids) + 1)
        assert calls[0].split()[1] in items  # ... and it was done again, elsewhere
        assert {int(line.split()[0]) for line in done} <= worker_pids | _worker_pids(address)

        # a second run reuses the warm workers: no new worker process
        before = _worker_pids(address)
        assert materialize_ids([assets], catalogue_ids, instance, resources, tags={"klio/force": "true"}).success
        assert {int(line.split()[0]) for line in lines(tmp_path / "done")[len(done):]} <= before
        worker_pids |= before

    time.sleep(0.5)
    assert not any(_alive(pid) for pid in worker_pids), "worker processes outlived the context"


def _worker_pids(address: str, count: int = 2) -> set[int]:
    """The pids of the ``count`` workers, once that many are up (a killed one's replacement may
    still be starting)."""
    with Client(address) as client:
        client.wait_for_workers(count, timeout=60)
        return set(client.run(os.getpid).values())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _note_pid(path: str) -> None:
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")


def test_the_warm_up_runs_once_on_every_worker(tmp_path):
    log = str(tmp_path / "warmed")
    with local_workers(2, warm_up=functools.partial(_note_pid, log)) as address:
        pids = _worker_pids(address)
        deadline = time.monotonic() + 60
        while len(lines(log)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    assert sorted(map(int, lines(log))) == sorted(pids)


def test_the_warm_up_calls_every_media_asset_in_memory(tmp_path, monkeypatch):
    from klio_assets.definitions import MEDIA_ASSETS
    from klio_dev.local_workers import warm_up
    from pipelines import worker_resources

    worker_resources.release_all()
    monkeypatch.chdir(tmp_path)
    warm_up(MEDIA_ASSETS)
    assert worker_resources.get("note_events", "model", lambda: pytest.fail("the model was not built")) is not None
    assert os.listdir(tmp_path) == []  # nothing written
    worker_resources.release_all()


def _numeric_threads_and_malloc() -> tuple[set[int], str | None]:
    import numpy  # noqa: F401  (loads OpenBLAS, whose pool threadpoolctl reads)
    import threadpoolctl

    return {pool["num_threads"] for pool in threadpoolctl.threadpool_info()}, os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_workers_run_numeric_libraries_on_one_thread_with_glibc_malloc_settings():
    """The thread settings must reach a worker before its libraries load (else OpenBLAS starts a
    thread per core, which spin beside the worker's own), and Dask's malloc trim setting must not
    (it costs ~20 ms of system CPU per media ID, klio_dev/local_workers.py)."""
    with local_workers(1) as address, Client(address) as client:
        [(threads, trim)] = client.run(_numeric_threads_and_malloc).values()
    assert threads == {1}
    assert trim is None

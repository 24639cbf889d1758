"""A run SIGKILLed while it writes: nothing partial, and after one more run Dagster's partition
status equals what storage holds, for every asset and media ID."""

import os
import signal
import subprocess
import sys
import time

import dagster as dg
import numpy as np
import pytest
import soundfile

from klio_assets import build_media_assets
from klio_assets.builtin.audio import AUDIO_ASSETS
from klio_dev.stack import ROOT
from resources.beam import BeamRunner
from resources.storage import LocalMediaStorage
from tests.conftest import materialize_ids, materialized_partitions
from tests.klio_assets.test_job_semantics import clone_sources

pytestmark = [pytest.mark.slow, pytest.mark.faults]

ASSETS = [o.asset for a in AUDIO_ASSETS for o in a.outputs]
SUFFIX = {"waveform": ".wav"} | {a: ".png" for a in ASSETS if a.endswith("_plot")}


def on_disk(store_root: str, asset: str) -> set[str]:
    """The media IDs whose output of ``asset`` is stored with its record (what counts as written)."""
    folder = os.path.join(store_root, asset)
    suffix = SUFFIX.get(asset, ".npy")
    if not os.path.isdir(folder):
        return set()
    return {name[:-len(suffix)] for name in os.listdir(folder) if name.endswith(suffix) and not name.startswith(".")
            and os.path.exists(os.path.join(folder, ".klio", name[:-len(suffix)] + ".json"))}


def assert_whole(store_root: str, asset: str, media_id: str) -> None:
    path = os.path.join(store_root, asset, media_id + SUFFIX.get(asset, ".npy"))
    if path.endswith(".npy"):
        assert np.isfinite(np.load(path)).all(), path
    elif path.endswith(".wav"):
        assert len(soundfile.read(path)[0]) > 0, path
    else:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", path


def test_a_killed_run_leaves_nothing_partial_and_the_next_run_makes_dagster_equal_storage(
        tmp_path, store_root, catalogue_ids, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    ids = clone_sources(store_root, catalogue_ids, 30)
    kills = []
    for _ in range(3):  # killed at a different point each time; each run resumes the last
        process = subprocess.Popen([sys.executable, "-m", "tests.faults.run_in_home", store_root, *ids],
                                   cwd=ROOT, env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        target = sum(len(on_disk(store_root, a)) for a in ASSETS) + 40
        deadline = time.monotonic() + 300
        while sum(len(on_disk(store_root, a)) for a in ASSETS) < target and process.poll() is None:
            assert time.monotonic() < deadline, "the run wrote nothing for 5 minutes"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills.append(sum(len(on_disk(store_root, a)) for a in ASSETS))

    with dg.DagsterInstance.get() as instance:
        written = {a: on_disk(store_root, a) for a in ASSETS}
        unreported = {a: len(written[a] - materialized_partitions(instance, a)) for a in ASSETS}
        assert sum(unreported.values()) > 0, f"the kills left nothing to reconcile: {kills}"
        for asset in ASSETS:
            for media_id in written[asset]:
                assert_whole(store_root, asset, media_id)

        result = materialize_ids([build_media_assets(AUDIO_ASSETS)], ids, instance,
                                 {"media_storage": LocalMediaStorage(root=store_root), "beam_runner": BeamRunner()})
        assert result.success
        for asset in ASSETS:
            assert on_disk(store_root, asset) == set(ids), asset
            assert materialized_partitions(instance, asset) == set(ids), (
                f"{asset}: Dagster shows {len(materialized_partitions(instance, asset))} of 30 materialized; "
                f"{unreported[asset]} were on disk but unreported after the kills (outputs at each kill: {kills})")
        recovered = [r for a in ASSETS for r in instance.fetch_materializations(dg.AssetKey(a), limit=1000).records
                     if r.run_id == result.run_id and "recovered_from_storage" in r.asset_materialization.metadata]
        assert len(recovered) >= sum(unreported.values())
        assert all(r.asset_materialization.metadata["written_by_run"].value != result.run_id for r in recovered)

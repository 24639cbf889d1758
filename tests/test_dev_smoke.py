"""The README's dev command, end to end: serve, materialize one ID, backfill several, publish a
new ID and let the sensor materialize it, shut down."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from klio_assets.backfill import DagsterWebserver

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = ["waveform", "spectrogram", "mel_spectrogram", "mfcc",
          "waveform_plot", "spectrogram_plot", "mel_spectrogram_plot", "mfcc_plot"]
SUFFIX = {"waveform": ".wav", "waveform_plot": ".png", "spectrogram_plot": ".png",
          "mel_spectrogram_plot": ".png", "mfcc_plot": ".png"}
LOCATION_STATUS = """{ locationStatusesOrError { __typename
  ... on WorkspaceLocationStatusEntries { entries { name loadStatus } } } }"""
PARTITION_STATUS = """query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) {
  ... on AssetNode { partitionStats { numMaterialized numPartitions } } } }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout_s: float, what: str, log_path: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:  # the server is still starting
            pass
        time.sleep(1)
    with open(log_path) as f:
        tail = f.read()[-4000:]
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; dev log tail:\n{tail}")


def wait_for_group_to_exit(pgid: int, timeout_s: float) -> list[str]:
    """Command lines of the processes still in process group ``pgid`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        survivors = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if os.getpgid(int(pid)) == pgid:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        survivors.append(f.read().replace(b"\0", b" ").decode()[:200])
            except (ProcessLookupError, FileNotFoundError, PermissionError):
                continue
        if not survivors or time.monotonic() > deadline:
            return survivors
        time.sleep(0.5)


def outputs_exist(data_root: str, media_id: str) -> bool:
    return all(os.path.exists(os.path.join(data_root, a, media_id + SUFFIX.get(a, ".npy"))) for a in ASSETS)


@pytest.mark.slow
def test_dev_command_serves_materializes_backfills_and_shuts_down(tmp_path):
    port, data_root, log_path = free_port(), str(tmp_path / "data"), str(tmp_path / "dev.log")
    emulator_port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "KLIO_DATA_ROOT": data_root,
           "KLIO_DEMO_COUNT": "5", "KLIO_MAX_IDS_PER_RUN": "2", "KLIO_PUBSUB_EMULATOR_PORT": str(emulator_port)}
    for name in ("KLIO_PUBSUB_PROJECT", "PUBSUB_EMULATOR_HOST"):
        env.pop(name, None)
    with open(log_path, "w") as log:
        dev = subprocess.Popen(["bash", os.path.join(ROOT, "scripts", "dev.sh"), "-p", str(port),
                                "-h", "127.0.0.1"], env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    server = DagsterWebserver(f"http://127.0.0.1:{port}")
    try:
        wait_until(lambda: server.query(LOCATION_STATUS)["locationStatusesOrError"]["entries"][0]["loadStatus"] == "LOADED",
                   600, "the code location to load", log_path)
        assert sorted(k[0] for k in server.media_asset_keys()) == sorted(
            ASSETS + ["foreground_spectrogram", "background_spectrogram", "foreground_plot", "background_plot"])

        # Materialize one media ID, as the UI's "Materialize" on one partition does.
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        run_id = client.submit_job_execution("media_job", tags={"dagster/partition": "demo-000-tone"})
        wait_until(lambda: client.get_run_status(run_id) in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE),
                   300, f"run {run_id}", log_path)
        assert client.get_run_status(run_id) == DagsterRunStatus.SUCCESS
        assert outputs_exist(data_root, "demo-000-tone")

        # Backfill four more: at most 2 IDs per run, so exactly 2 runs.
        ids = ["demo-001-chord", "demo-002-sweep", "demo-003-noise", "demo-004-tone"]
        backfill = server.wait_for_backfill(server.launch_backfill([[a] for a in ASSETS], ids), 600)
        assert backfill["status"] == "COMPLETED_SUCCESS", backfill
        assert len(backfill["runs"]) == 2
        for run in backfill["runs"]:
            tags = {t["key"]: t["value"] for t in run["tags"]}
            assert "dagster/asset_partition_range_start" in tags and run["status"] == "SUCCESS"
        assert all(outputs_exist(data_root, i) for i in ids)
        stats = server.query(PARTITION_STATUS, {"key": {"path": ["mfcc_plot"]}})["assetNodeOrError"]["partitionStats"]
        assert stats == {"numMaterialized": 5, "numPartitions": 5}

        # New content: a file lands and its ID is published; the sensor does the rest.
        shutil.copy(os.path.join(data_root, "sources", "demo-001-chord.flac"),
                    os.path.join(data_root, "sources", "track-x.flac"))
        publish = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "klio-publish"), "track-x"],
            env={**env, "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{emulator_port}"},
            capture_output=True, text=True, timeout=120)
        assert publish.returncode == 0, publish.stderr
        wait_until(lambda: outputs_exist(data_root, "track-x"), 300, "the sensor's run for track-x", log_path)
        wait_until(lambda: server.query(PARTITION_STATUS, {"key": {"path": ["mfcc_plot"]}})
                   ["assetNodeOrError"]["partitionStats"]["numMaterialized"] == 6,
                   120, "track-x to show as materialized", log_path)
    finally:
        # Ctrl-C, as a person stops `dagster dev`: SIGINT to the whole process group.
        os.killpg(dev.pid, signal.SIGINT)
        try:
            returncode = dev.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            raise
    assert returncode == 0
    survivors = wait_for_group_to_exit(dev.pid, timeout_s=30)
    assert not survivors, f"still running after dagster dev exited: {survivors}"
    with socket.socket() as s:  # the Pub/Sub emulator was stopped too
        assert s.connect_ex(("127.0.0.1", emulator_port)) != 0

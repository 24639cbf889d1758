"""The README's dev command, end to end: serve, materialize one ID, backfill several, publish a
new ID and let the sensor materialize it, shut down."""

import os
import shutil
import signal

import pytest
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient
from music_tags.assets import TAGS_ASSETS

from klio_assets.definitions import MEDIA_GRAPH
from klio_core.stack_file import STACK_FILE
from klio_dev.stack import processes_in_session, start_dev_stack, wait_until
from pipelines.graph import asset_graph
from resources.dagster_tags import PARTITION_TAG, RANGE_START_TAG

ASSETS = ["waveform", "spectrogram", "mel_spectrogram", "mfcc",
          "waveform_plot", "spectrogram_plot", "mel_spectrogram_plot", "mfcc_plot"]
SUFFIX = {"waveform": ".wav", "waveform_plot": ".png", "spectrogram_plot": ".png",
          "mel_spectrogram_plot": ".png", "mfcc_plot": ".png"}
PARTITION_STATUS = """query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) {
  ... on AssetNode { partitionStats { numMaterialized numPartitions } } } }"""


def outputs_exist(data_root: str, media_id: str) -> bool:
    return all(os.path.exists(os.path.join(data_root, a, media_id + SUFFIX.get(a, ".npy"))) for a in ASSETS)


@pytest.mark.slow
def test_dev_command_serves_materializes_backfills_and_shuts_down(tmp_path):
    dev = start_dev_stack(str(tmp_path), demo_count=5, max_ids_per_run=2)
    server, data_root = dev.server, dev.data_root
    materialized = lambda: server.query(PARTITION_STATUS, {"key": {"path": ["mfcc_plot"]}})[  # noqa: E731
        "assetNodeOrError"]["partitionStats"]
    try:
        # both code locations' media assets: this project's and the tags team's (workspace.yaml)
        assert sorted(k[0] for k in server.media_asset_keys()) == sorted([*MEDIA_GRAPH, *asset_graph(TAGS_ASSETS)])

        # Materialize one media ID, as the UI's "Materialize" on one partition does.
        client = DagsterGraphQLClient("127.0.0.1", port_number=dev.port)
        run_id = client.submit_job_execution("media_job", tags={PARTITION_TAG: "demo-000-tone"})
        wait_until(lambda: client.get_run_status(run_id) in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE),
                   300, f"run {run_id}", dev.log_path)
        assert client.get_run_status(run_id) == DagsterRunStatus.SUCCESS
        assert outputs_exist(data_root, "demo-000-tone")
        # media_job is every media asset, the trained model's notes included
        assert os.path.exists(os.path.join(data_root, "note_events", "demo-000-tone.csv"))

        # Backfill four more: at most 2 IDs per run, so exactly 2 runs.
        ids = ["demo-001-chord", "demo-002-sweep", "demo-003-noise", "demo-004-tone"]
        backfill = server.wait_for_backfill(server.launch_backfill([[a] for a in ASSETS], ids), 600)
        assert backfill["status"] == "COMPLETED_SUCCESS", backfill
        assert len(backfill["runs"]) == 2
        for run in backfill["runs"]:
            tags = {t["key"]: t["value"] for t in run["tags"]}
            assert RANGE_START_TAG in tags and run["status"] == "SUCCESS"
        assert all(outputs_exist(data_root, i) for i in ids)
        assert materialized() == {"numMaterialized": 5, "numPartitions": 5}

        # New content: a file lands and its ID is published; the sensor does the rest.
        shutil.copy(os.path.join(data_root, "sources", "demo-001-chord.flac"),
                    os.path.join(data_root, "sources", "track-x.flac"))
        publish = dev.publish("track-x")
        assert publish.returncode == 0, publish.stderr
        wait_until(lambda: outputs_exist(data_root, "track-x"), 300, "the sensor's run for track-x", dev.log_path)
        wait_until(lambda: materialized()["numMaterialized"] == 6, 120, "track-x to show as materialized",
                   dev.log_path)

        # The second team's code location (teams/music_tags) made its tags from this location's
        # announcements of waveform and note_events, in runs of its own sensor.
        tags = lambda m: all(os.path.exists(os.path.join(data_root, a, m + ".csv"))  # noqa: E731
                             for a in ("tempo", "musical_key", "loudness", "notes_summary"))
        wait_until(lambda: tags("demo-000-tone") and tags("track-x"), 300, "the tags team's runs", dev.log_path)

        # Bottom-up across the boundary: the tags team's sensor asks this location for the waveform
        # of a new ID, which is made alone, and then tempo alone.
        shutil.copy(os.path.join(data_root, "sources", "demo-002-sweep.ogg"),
                    os.path.join(data_root, "sources", "track-y.ogg"))
        bottom_up = dev.publish("track-y", "--bottom-up", "tempo", "--topic", "klio-media-outputs")
        assert bottom_up.returncode == 0, bottom_up.stderr
        made = lambda asset, ext: os.path.exists(os.path.join(data_root, asset, "track-y" + ext))  # noqa: E731
        wait_until(lambda: made("tempo", ".csv"), 300, "tempo of track-y, after its waveform", dev.log_path)
        assert made("waveform", ".wav") and not made("mfcc", ".npy") and not made("loudness", ".csv")

        # A catalogue folder registered and backfilled in one command; its IDs keep their folders.
        nested = os.path.join(data_root, "sources", "label", "2024")
        os.makedirs(nested)
        shutil.copy(os.path.join(data_root, "sources", "demo-001-chord.flac"), os.path.join(nested, "Track 1.flac"))
        register = dev.command("klio-register", "--from", os.path.join(data_root, "sources"), "--backfill",
                               "--assets", "waveform")  # from a second terminal: the stack is found
        assert register.returncode == 0, register.stderr
        assert "1 added, 7 already known, 0 rejected" in register.stdout, register.stdout
        stored = os.path.join(data_root, "waveform", "label", "2024", "%54rack%201.wav")
        wait_until(lambda: os.path.exists(stored), 300, "the registered ID's backfill", dev.log_path)

        # The other commands find the stack too, and refuse a mistake before doing anything.
        verify = dev.command("klio-verify")
        assert "Pub/Sub not checked" not in verify.stdout, verify.stdout
        assert "ok       input topic" in verify.stdout, verify.stdout
        typo = dev.command("klio-backfill", "track-x", "--assets", "spectrogramm")
        assert typo.returncode == 1 and "no media asset 'spectrogramm' (did you mean spectrogram" in typo.stderr, \
            typo.stderr
    finally:
        returncode, survivors = dev.stop()
    assert returncode == 0
    assert not survivors, f"still running after dagster dev exited: {survivors}"
    assert dev.emulator_is_down()
    assert "SupersessionWarning" not in open(dev.log_path).read()  # no deprecation line at start


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_klio_dev_started_with_sigint_ignored_stops_on_a_signal_to_itself_alone(tmp_path, signum):
    """As from a script's background job (SIGINT ignored, inherited) and stopped with ``kill``:
    klio-dev alone gets the signal, and it stops dagster dev, the workers and the emulator."""
    dev = start_dev_stack(str(tmp_path), demo_count=0, max_ids_per_run=2, sigint=signal.SIG_IGN)
    home = dev.env["DAGSTER_HOME"]
    assert os.path.exists(os.path.join(home, STACK_FILE))
    try:
        os.kill(dev.process.pid, signum)
        returncode = dev.process.wait(timeout=120)  # a liveness bound; klio-dev gives dagster dev 20 s
    except BaseException:
        dev.stop()
        raise
    wait_until(lambda: not processes_in_session(dev.process.pid), 60, "the stack's processes to end", dev.log_path)
    assert returncode in (0, 128 + signum, -signum, 1)
    assert dev.emulator_is_down()
    assert not os.path.exists(os.path.join(home, STACK_FILE))

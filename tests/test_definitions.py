import os
import subprocess
import sys

import dagster as dg

from klio_assets.definitions import defs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUDIO = {"waveform", "spectrogram", "mel_spectrogram", "mfcc",
         "waveform_plot", "spectrogram_plot", "mel_spectrogram_plot", "mfcc_plot"}
MEDIA_ASSETS = AUDIO | {"foreground_spectrogram", "background_spectrogram", "foreground_plot", "background_plot",
                         "note_events"}


def test_every_media_asset_is_partitioned_by_media_ids():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == MEDIA_ASSETS
    for key in graph.get_all_asset_keys():
        assert graph.get(key).partitions_def.name == "media_ids"
    # "every media asset" is one set: what media_job runs and what a top-down event runs
    job = defs.resolve_job_def("media_job")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == MEDIA_ASSETS
    [sensor] = defs.sensors
    assert {k.to_user_string() for k in sensor.asset_selection.resolve(graph)} == MEDIA_ASSETS


def test_code_location_loads_with_the_dagster_cli(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "KLIO_MAX_IDS_PER_RUN": "37"}
    validate = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "dagster"), "definitions", "validate",
         "-w", os.path.join(ROOT, "workspace.yaml")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert "Validation successful" in validate.stdout + validate.stderr
    # The cap on IDs per run is read from the environment by the Definitions module.
    probe = subprocess.run(
        [sys.executable, "-c", "from klio_assets.definitions import defs;"
         "print(defs.resolve_assets_def('waveform').backfill_policy.max_partitions_per_run)"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert probe.stdout.strip().splitlines()[-1] == "37", probe.stderr


def storage_in_a_fresh_process(home, expression: str, **settings: str) -> subprocess.CompletedProcess:
    """Load the Definitions with ``settings`` in the environment and print ``expression`` of ``r``,
    the media_storage resource."""
    return subprocess.run(
        [sys.executable, "-c", f"from klio_assets.definitions import defs; r = defs.resources['media_storage'];"
         f"print({expression})"],
        cwd=ROOT, env={**os.environ, "DAGSTER_HOME": str(home), **settings}, capture_output=True, text=True,
        timeout=300)


def test_a_gs_data_root_selects_gcs_storage_by_configuration_alone(tmp_path):
    probe = storage_in_a_fresh_process(tmp_path, "type(r).__name__, r.store().output_uri('mfcc', 't1', '.npy')",
                                       KLIO_DATA_ROOT="gs://my-bucket/media")
    assert probe.stdout.strip().splitlines()[-1] == "GCSMediaStorage gs://my-bucket/media/mfcc/t1.npy", probe.stderr


def test_definitions_use_local_storage_and_the_direct_runner():
    resources = defs.resources
    assert resources["beam_runner"].runner == "DirectRunner"
    assert resources["media_storage"].root == os.path.abspath(os.environ.get("KLIO_DATA_ROOT", "data"))
    assert isinstance(defs.executor, dg.ExecutorDefinition)


def test_source_suffixes_come_from_the_environment(tmp_path):
    probe = storage_in_a_fresh_process(tmp_path, "r.store().source_suffixes", KLIO_SOURCE_SUFFIXES=".oga,.m4a")
    assert probe.stdout.strip().splitlines()[-1] == "('.oga', '.m4a')", probe.stderr
    bad = storage_in_a_fresh_process(tmp_path, "r", KLIO_SOURCE_SUFFIXES="wav")
    assert bad.returncode != 0 and "KLIO_SOURCE_SUFFIXES must be a comma-separated list" in bad.stderr

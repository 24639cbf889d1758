"""The production instance settings (deploy/dagster.yaml) on a real PostgreSQL server: the sensor
registers partitions, a run materializes, and the state survives a restart of the Dagster processes.
The Kubernetes run launcher is replaced by the default one here: no cluster runs on this machine."""

import os
import subprocess
import sys

import pytest
import yaml
from dagster import DagsterInstance

from klio_core.wire import MediaEvent, encode_event
from klio_dev.postgres import throwaway_postgres
from klio_dev.stack import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def postgres():
    with throwaway_postgres() as url:
        yield {"DAGSTER_PG_URL": url}


@pytest.fixture
def production_home(tmp_path, postgres, monkeypatch):
    with open(os.path.join(ROOT, "deploy", "dagster.yaml")) as f:
        settings = yaml.safe_load(f)
    assert settings["run_launcher"]["class"] == "K8sRunLauncher"
    del settings["run_launcher"]
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(settings))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for name, value in postgres.items():
        monkeypatch.setenv(name, value)
    return str(home)


def test_sensor_partitions_and_runs_persist_in_postgres(production_home, pubsub, resources, catalogue_ids):
    from tests.sensors.conftest import Daemon

    ids = catalogue_ids[:2]
    with DagsterInstance.get() as instance:
        assert type(instance.event_log_storage).__name__ == "CompactCheckPlansPostgresEventLogStorage"
        assert type(instance.run_storage).__name__ == "KeptOpenPostgresRunStorage"
        assert type(instance.schedule_storage).__name__ == "KeptOpenPostgresScheduleStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        pubsub.publish(pubsub.topic, [(encode_event(MediaEvent(i, recipients=("mfcc",))), {}) for i in ids])
        daemon = Daemon(instance, pubsub, resources)
        requests = daemon.tick()
        assert instance.get_dynamic_partitions("media_ids") == ids
        assert all(r.success for r in daemon.execute(requests))

    # A new Dagster process, reading the same PostgreSQL database.
    probe = subprocess.run(
        [sys.executable, "-c",
         "from dagster import DagsterInstance, AssetKey\n"
         "with DagsterInstance.get() as i:\n"
         "    print(i.get_dynamic_partitions('media_ids'))\n"
         "    print(sorted(i.get_materialized_partitions(AssetKey('mfcc'))))\n"
         "    print(len(i.get_runs()))"],
        env=os.environ.copy(), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert probe.returncode == 0, probe.stderr[-2000:]
    lines = probe.stdout.strip().splitlines()[-3:]
    assert lines == [str(ids), str(sorted(ids)), str(len(requests))]

import os

import pytest
import yaml

from klio_dev.postgres import throwaway_postgres
from klio_dev.stack import ROOT


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def home(request, tmp_path, monkeypatch):
    """A Dagster home (``DAGSTER_HOME``) with the local dagster.yaml's event log, or
    deploy/dagster.yaml's storages on a throwaway PostgreSQL server."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    if request.param == "sqlite":
        with open(os.path.join(ROOT, "dagster.yaml")) as f:
            (home / "dagster.yaml").write_text(yaml.safe_dump({"event_log_storage": yaml.safe_load(f)["event_log_storage"]}))
        yield str(home)
        return
    with open(os.path.join(ROOT, "deploy", "dagster.yaml")) as f:
        deployed = yaml.safe_load(f)
    with throwaway_postgres() as url:
        monkeypatch.setenv("DAGSTER_PG_URL", url)
        (home / "dagster.yaml").write_text(yaml.safe_dump(
            {k: deployed[k] for k in ("run_storage", "event_log_storage", "schedule_storage")}))
        yield str(home)

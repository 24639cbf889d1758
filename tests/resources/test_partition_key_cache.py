"""Both event log storages list dynamic partition keys once per change: a second instance (as
another process) adds and deletes keys, and the cached instance sees each change at once and
lists again only then."""

import os

import dagster as dg
import pytest
import yaml

from klio_dev.postgres import throwaway_postgres
from klio_dev.stack import ROOT


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def home(request, tmp_path, monkeypatch):
    """A Dagster home with the local dagster.yaml's event log, or deploy/dagster.yaml's storages."""
    if request.param == "sqlite":
        settings = {"event_log_storage": yaml.safe_load(open(os.path.join(ROOT, "dagster.yaml")))["event_log_storage"]}
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
        (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(settings))
        yield str(tmp_path)
        return
    with open(os.path.join(ROOT, "deploy", "dagster.yaml")) as f:
        deployed = yaml.safe_load(f)
    settings = {k: deployed[k] for k in ("run_storage", "event_log_storage", "schedule_storage")}
    with throwaway_postgres() as url:
        monkeypatch.setenv("DAGSTER_PG_URL", url)
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
        (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(settings))
        yield str(tmp_path)


def test_partition_keys_are_listed_once_per_change(home, monkeypatch):
    with dg.DagsterInstance.get() as cached, dg.DagsterInstance.get() as other:
        storage_class = type(cached.event_log_storage)
        assert storage_class.__module__.startswith("resources."), storage_class
        other.add_dynamic_partitions("ids", ["a", "b", "c"])
        assert cached.get_dynamic_partitions("ids") == ["a", "b", "c"]
        listings = []
        dagsters = storage_class.__mro__[1].get_dynamic_partitions
        monkeypatch.setattr(storage_class.__mro__[1], "get_dynamic_partitions",
                            lambda self, name: (listings.append(name), dagsters(self, name))[1])
        assert cached.get_dynamic_partitions("ids") == ["a", "b", "c"]
        assert listings == []  # unchanged: served from the cache
        other.add_dynamic_partitions("ids", ["d"])
        assert cached.get_dynamic_partitions("ids") == ["a", "b", "c", "d"]
        other.delete_dynamic_partition("ids", "b")
        assert cached.get_dynamic_partitions("ids") == ["a", "c", "d"]
        # the newest key deleted and another added: the database may give the new row the same id
        other.delete_dynamic_partition("ids", "d")
        other.add_dynamic_partitions("ids", ["e"])
        assert cached.get_dynamic_partitions("ids") == ["a", "c", "e"]
        other.add_dynamic_partitions("more", ["x"])  # another definition's change leaves this list cached
        assert cached.get_dynamic_partitions("ids") == ["a", "c", "e"]
        assert cached.get_dynamic_partitions("none") == []
        assert listings == ["ids", "ids", "ids", "none"]


def test_the_one_cached_list_cannot_be_changed_by_a_caller(home):
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("ids", ["a", "b"])
        keys = instance.get_dynamic_partitions("ids")
        with pytest.raises(TypeError, match="cannot be changed"):
            keys.append("c")
        assert keys + ["c"] == ["a", "b", "c"]  # a copy is an ordinary list
        assert instance.get_dynamic_partitions("ids") == ["a", "b"]


def test_keys_registered_before_the_cache_existed_are_versioned_when_it_starts(home):
    """A home written by Dagster's own storage (no version table, no triggers) and then opened
    with this project's."""
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("ids", ["a"])
        with instance.event_log_storage.index_connection() as conn:
            for statement in ("DROP TRIGGER klio_dynamic_partition_added", "DROP TABLE klio_dynamic_partition_versions") \
                    if "sqlite" in type(instance.event_log_storage).__name__.lower() else \
                    ("DROP TRIGGER klio_dynamic_partitions_added ON dynamic_partitions",
                     "DROP TABLE klio_dynamic_partition_versions"):
                conn.exec_driver_sql(statement)
        instance.add_dynamic_partitions("ids", ["b"])  # not versioned: nothing listens
    with dg.DagsterInstance.get() as reopened:
        assert reopened.get_dynamic_partitions("ids") == ["a", "b"]
        with dg.DagsterInstance.get() as other:
            other.add_dynamic_partitions("ids", ["c"])
        assert reopened.get_dynamic_partitions("ids") == ["a", "b", "c"]

"""The local instance's run and schedule storages keep their SQLite connections open (Dagster's open
one per query), write Dagster's files in Dagster's default places, and open a database at the
schema's head without Dagster's revision check, and any other through it."""

import os
import shutil
import sqlite3

import dagster as dg
import pytest
import sqlalchemy as db
import yaml

from resources.sqlite_storages import KeptOpenSqliteRunStorage, KeptOpenSqliteScheduleStorage

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def project_home(path, monkeypatch, storages: str = "project") -> str:
    """A DAGSTER_HOME with the project's storage settings, or none (Dagster's defaults)."""
    with open(os.path.join(ROOT, "dagster.yaml")) as f:
        settings = yaml.safe_load(f)
    chosen = {k: settings[k] for k in ("run_storage", "schedule_storage", "event_log_storage")} \
        if storages == "project" else {}
    path.mkdir(exist_ok=True)
    (path / "dagster.yaml").write_text(yaml.safe_dump(chosen))
    monkeypatch.setenv("DAGSTER_HOME", str(path))
    return str(path)


@pytest.fixture
def connects(monkeypatch):
    """Every SQLite connection any engine opens from here on, by database file."""
    opened: list[str] = []

    def note(dbapi_connection, _record):
        opened.append(dbapi_connection.execute("PRAGMA database_list").fetchone()[2])

    db.event.listen(db.engine.Engine, "connect", note)
    yield opened
    db.event.remove(db.engine.Engine, "connect", note)


def daemon_like_queries(instance: dg.DagsterInstance, n: int) -> None:
    for _ in range(n):
        instance.get_run_by_id("no-such-run")
        instance.get_runs(limit=5)
        instance.all_instigator_state()


def test_the_project_instance_uses_them_and_dagsters_defaults_read_the_same_files(tmp_path, monkeypatch):
    project_home(tmp_path / "home", monkeypatch)
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage) is KeptOpenSqliteRunStorage
        assert type(instance.schedule_storage) is KeptOpenSqliteScheduleStorage
        result = dg.materialize([dg.asset(name="a")(lambda: 1)], instance=instance)
        assert result.success
    assert (tmp_path / "home" / "history" / "runs.db").exists()
    assert (tmp_path / "home" / "schedules" / "schedules.db").exists()
    project_home(tmp_path / "home", monkeypatch, storages="dagster's")
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        [run] = instance.get_runs()
        assert run.run_id == result.run_id and run.status == dg.DagsterRunStatus.SUCCESS


@pytest.mark.parametrize("storages", ["project", "dagster's"])
def test_queries_reuse_kept_connections(tmp_path, monkeypatch, connects, storages):
    project_home(tmp_path / "home", monkeypatch, storages)
    with dg.DagsterInstance.get() as instance:
        daemon_like_queries(instance, 1)
        before = [c for c in connects if c.endswith(("runs.db", "schedules.db"))]
        daemon_like_queries(instance, 20)
        during = [c for c in connects if c.endswith(("runs.db", "schedules.db"))][len(before):]
    if storages == "project":
        assert during == []
    else:  # Dagster's: a new connection per query
        assert len(during) >= 60


def migration_loads(monkeypatch) -> list:
    """Each time Alembic loads the migration scripts from here on."""
    from alembic.script import ScriptDirectory

    loads = []
    original = ScriptDirectory.from_config.__func__
    monkeypatch.setattr(ScriptDirectory, "from_config",
                        classmethod(lambda cls, config: loads.append(config) or original(cls, config)))
    return loads


def test_a_new_instance_on_a_database_at_head_opens_without_loading_the_migrations(tmp_path, monkeypatch):
    """The code server makes an instance per sensor tick: Dagster's check of the schema's revision
    loaded every migration script each time."""
    project_home(tmp_path / "home", monkeypatch)
    for _ in range(2):  # the first creates both databases through Dagster's checks; Alembic's head is known after
        with dg.DagsterInstance.get():
            pass
    loads = migration_loads(monkeypatch)
    for _ in range(3):
        with dg.DagsterInstance.get() as instance:
            assert instance.get_runs() == [] and instance.all_instigator_state() == []
    assert loads == []


def test_a_database_not_at_head_or_made_again_goes_through_dagsters_checks(tmp_path, monkeypatch):
    home = project_home(tmp_path / "home", monkeypatch)
    for _ in range(2):
        with dg.DagsterInstance.get():
            pass
    with sqlite3.connect(os.path.join(home, "schedules", "schedules.db")) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'an-older-one'")
    loads = migration_loads(monkeypatch)
    with dg.DagsterInstance.get():
        pass
    assert len(loads) == 1  # the schedule storage's, by Dagster's from_local
    # a home removed and made again at the same place: its databases are created, not assumed
    shutil.rmtree(home)
    project_home(tmp_path / "home", monkeypatch)
    with dg.DagsterInstance.get() as instance:
        assert instance.get_runs() == [] and instance.all_instigator_state() == []
        assert dg.materialize([dg.asset(name="a")(lambda: 1)], instance=instance).success


def test_a_forked_child_opens_its_own_connections(tmp_path, monkeypatch, connects):
    import multiprocessing

    project_home(tmp_path / "home", monkeypatch)
    with dg.DagsterInstance.get() as instance:
        daemon_like_queries(instance, 1)
        fork = multiprocessing.get_context("fork")
        answer = fork.SimpleQueue()

        def child():
            before = len(connects)
            daemon_like_queries(instance, 2)
            answer.put(len([c for c in connects[before:] if c.endswith(("runs.db", "schedules.db"))]))

        process = fork.Process(target=child)
        process.start()
        process.join(60)
        assert process.exitcode == 0
        assert answer.get() >= 2  # its own, one per database at least, not the parent's
        before = len(connects)
        daemon_like_queries(instance, 2)
        assert [c for c in connects[before:] if c.endswith(("runs.db", "schedules.db"))] == []  # the parent's still work


def test_many_threads_at_once_never_wait_for_a_connection(tmp_path, monkeypatch):
    """More queries at once than connections kept (the daemon's threads): each gets one."""
    import contextlib

    project_home(tmp_path / "home", monkeypatch)
    with dg.DagsterInstance.get() as instance, contextlib.ExitStack() as held:
        connections = [held.enter_context(instance.run_storage.connect()) for _ in range(30)]
        assert [c.execute(db.text("SELECT count(*) FROM runs")).scalar() for c in connections] == [0] * 30

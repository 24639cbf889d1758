"""The local instance's event log keeps its SQLite connections open; everything else must behave
as Dagster's own SQLite event log: other processes see every write at once, the webserver's
live-log watcher wakes on each new event, and Dagster's storage reads the same files."""

import os
import sqlite3
import subprocess
import sys
import threading
import time

import dagster as dg
import pytest
import yaml

from resources.dagster_settings import DEFAULTS
from resources.dagster_tags import RANGE_END_TAG, RANGE_START_TAG
from resources.sqlite_event_log import KeptOpenSqliteEventLogStorage, log_asset_events
from tests.resources.test_sqlite_storages import migration_loads

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
media = dg.DynamicPartitionsDefinition(name="ids")


@dg.multi_asset(specs=[dg.AssetSpec("x", partitions_def=media, skippable=True)], partitions_def=media)
def step(context):
    for key in context.partition_keys:
        yield dg.AssetMaterialization(asset_key="x", partition=key, metadata={"n": len(key)})


@pytest.fixture(autouse=True)
def restore_dagster_settings(monkeypatch):
    """The storage sets Dagster's settings for its process (DAGSTER_EVENT_BATCH_SIZE ...); undo that after each test."""
    for name in DEFAULTS:
        monkeypatch.delenv(name, raising=False)


def write_instance_yaml(home, event_log: str) -> None:
    settings = {"telemetry": {"enabled": False}}
    if event_log == "kept-open":
        settings["event_log_storage"] = {"module": "resources.sqlite_event_log",
                                         "class": "KeptOpenSqliteEventLogStorage"}
    (home / "dagster.yaml").write_text(yaml.safe_dump(settings))


def materialize_range(instance, ids):
    instance.add_dynamic_partitions("ids", ids)
    return dg.materialize([step], instance=instance, tags={
        RANGE_START_TAG: ids[0], RANGE_END_TAG: ids[-1]})


def test_the_project_instance_uses_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    (tmp_path / "dagster.yaml").write_text(open(os.path.join(ROOT, "dagster.yaml")).read())
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.event_log_storage, KeptOpenSqliteEventLogStorage)
        assert (tmp_path / "history" / "runs" / "index.db").exists()  # where Dagster's own storage keeps it


def test_both_storages_give_dagster_the_project_settings_unless_the_environment_does(home, monkeypatch):
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "7")
    with dg.DagsterInstance.get() as instance:
        assert instance.event_log_storage is not None
        assert {name: os.environ[name] for name in DEFAULTS} == {**DEFAULTS, "DAGSTER_EVENT_BATCH_SIZE": "7"}


def test_another_process_sees_every_write_while_the_connections_stay_open(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    write_instance_yaml(tmp_path, "kept-open")
    read_back = ("import dagster as dg; i = dg.DagsterInstance.get(); "
                 "print(sorted(i.get_materialized_partitions(dg.AssetKey('x'))))")
    with dg.DagsterInstance.get() as instance:
        assert materialize_range(instance, ["a", "b", "c"]).success
        assert instance.event_log_storage._engines  # connections are open right now
        # a new process, with Dagster's own SQLite event log, reads the same files
        write_instance_yaml(tmp_path, "dagster-default")
        seen = subprocess.run([sys.executable, "-c", read_back], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": ROOT}, check=True).stdout
        assert seen.strip() == "['a', 'b', 'c']"


def test_the_live_log_watcher_wakes_on_new_events(tmp_path, monkeypatch):
    """The webserver follows a run's log by watching its file; writes now land in the WAL."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    write_instance_yaml(tmp_path, "kept-open")
    with dg.DagsterInstance.get() as writer, dg.DagsterInstance.get() as watcher:
        run = writer.create_run_for_job(dg.Definitions(assets=[step]).resolve_implicit_global_asset_job_def(),
                                        run_config={})
        seen, woke = [], threading.Event()

        def callback(entry, _cursor):
            seen.append(entry.message)
            if entry.message == "second":
                woke.set()

        watcher.event_log_storage.watch(run.run_id, None, callback)
        writer.report_engine_event("first", run)
        writer.report_engine_event("second", run)
        assert woke.wait(timeout=20), seen
        assert [m for m in seen if m in ("first", "second")] == ["first", "second"]
        watcher.event_log_storage.end_watch(run.run_id, callback)


def test_it_holds_a_bounded_number_of_files_open(tmp_path):
    storage = KeptOpenSqliteEventLogStorage(str(tmp_path))
    for n in range(40):
        with storage.run_connection(f"run-{n}"):
            pass
    assert len(storage._engines) <= 16
    storage.dispose()
    assert storage._engines == {}


class Interrupt(BaseException):
    """As Dagster's run termination or Ctrl-C: not an Exception."""


def test_a_connection_dropped_mid_statement_leaves_no_lock_behind(tmp_path):
    """An interrupt inside a statement makes SQLAlchemy drop the connection while the statement
    still lives (a reference cycle through the traceback keeps it until the garbage collector
    runs). Its transaction must end with it: a terminated stream run's own last events, and
    every other writer of its database, failed with "database is locked" in CI."""
    storage = KeptOpenSqliteEventLogStorage(str(tmp_path))
    for n in range(3):
        storage.store_event(dg.EventLogEntry(error_info=None, level=20, user_message=f"before {n}", run_id="r",
                                             timestamp=time.time(), dagster_event=None))
    with pytest.raises(Interrupt):
        with storage.run_connection("r") as conn:
            conn.exec_driver_sql("INSERT INTO event_logs (run_id, event) VALUES ('r', '{}')")  # begins a transaction
            live = conn.exec_driver_sql("SELECT id FROM event_logs")
            live.fetchone()  # the statement has more rows: it stays open
            conn.invalidate()  # what SQLAlchemy does when an interrupt lands inside a statement
            raise Interrupt
    other = sqlite3.connect(tmp_path / "r.db", timeout=0)  # no waiting: the lock must be free now
    other.execute("INSERT INTO event_logs (run_id, event) VALUES ('other', '{}')")
    other.commit()
    other.close()
    storage.store_event(dg.EventLogEntry(error_info=None, level=20, user_message="after", run_id="r",
                                         timestamp=time.time(), dagster_event=None))
    messages = [r.event_log_entry.user_message for r in storage.get_records_for_run("r").records]
    assert messages == ["before 0", "before 1", "before 2", "after"]  # the dropped INSERT was rolled back
    storage.dispose()


@dg.multi_asset(specs=[dg.AssetSpec("y", partitions_def=media, skippable=True)], partitions_def=media)
def half_then_fail(context):
    keys = list(context.partition_keys)
    for key in keys[: len(keys) // 2]:
        yield dg.AssetMaterialization(asset_key="y", partition=key)
    raise dg.Failure("the second half failed")


def planned_events(instance, run_id: str) -> list:
    return [e.get_dagster_event() for e in instance.all_logs(run_id)
            if e.is_dagster_event and e.get_dagster_event().event_type == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED]


def test_one_planned_event_per_asset_and_failed_partitions_still_show(home):
    """Creating a run writes one planned event per asset, holding the run's partitions (both
    storages); Dagster's partition statuses (materialized, failed), a partition's latest run and
    a retry come out as with an event per partition."""
    ids = [f"id_{n:03d}" for n in range(40)]
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("ids", ids)
        result = dg.materialize([half_then_fail], instance=instance, raise_on_error=False, tags={
            RANGE_START_TAG: ids[0], RANGE_END_TAG: ids[-1]})
        assert not result.success
        [planned] = planned_events(instance, result.run_id)
        assert sorted(planned.partitions_subset.get_partition_keys()) == ids
        status = instance.get_status_by_partition(dg.AssetKey("y"), ids, media)
        assert {k for k, v in status.items() if v.value == "MATERIALIZED"} == set(ids[:20])
        assert {k for k, v in status.items() if v.value == "FAILED"} == set(ids[20:])
        info = instance.event_log_storage.get_latest_planned_materialization_info(dg.AssetKey("y"), ids[30])
        assert info is not None and info.run_id == result.run_id
        assert instance.event_log_storage.get_latest_planned_materialization_info(dg.AssetKey("y"), "id_9") is None

        # a retry of the failed ten (a second run, materializing half of them) answers those it made
        again = dg.materialize([half_then_fail], instance=instance, raise_on_error=False, tags={
            RANGE_START_TAG: ids[20], RANGE_END_TAG: ids[39]})
        instance.wipe_asset_cached_status([dg.AssetKey("y")])
        status = instance.get_status_by_partition(dg.AssetKey("y"), ids, media)
        assert {k for k, v in status.items() if v.value == "MATERIALIZED"} == set(ids[:30])
        assert {k for k, v in status.items() if v.value == "FAILED"} == set(ids[30:])
        assert instance.event_log_storage.get_latest_planned_materialization_info(
            dg.AssetKey("y"), ids[35]).run_id == again.run_id
        assert instance.event_log_storage.get_latest_planned_materialization_info(
            dg.AssetKey("y"), ids[5]).run_id == result.run_id


def database_schema(path) -> tuple:
    """What a SQLite database holds besides its rows: tables and indexes as created, its journal
    mode and its Alembic revision."""
    with sqlite3.connect(path) as conn:
        return (sorted(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")),
                conn.execute("PRAGMA journal_mode").fetchone(), conn.execute("SELECT * FROM alembic_version").fetchall())


def test_a_runs_database_is_made_as_dagsters_without_loading_the_migrations(tmp_path, monkeypatch):
    """The daemon makes a database for each run it creates. Dagster's storage checked each new
    one's schema revision and stamped it, loading every migration script twice; here a new
    database gets the same tables, journal mode and stamp directly."""
    made = {}
    for name in ("own", "kept-open"):
        (tmp_path / name).mkdir()
        write_instance_yaml(tmp_path / name, name)
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / name))
        with dg.DagsterInstance.get() as instance:
            instance.add_dynamic_partitions("ids", ["a", "b"])
            loads = migration_loads(monkeypatch)
            run_ids = [dg.materialize([step], instance=instance, partition_key=key).run_id for key in ("a", "b")]
            made[name] = ([database_schema(tmp_path / name / "history" / "runs" / f"{run_id}.db") for run_id in run_ids],
                          len(loads))
    assert made["kept-open"][0] == made["own"][0]
    assert made["own"][1] >= 4 and made["kept-open"][1] == 0  # Dagster's: two loads per run's database


@dg.asset_check(asset="x", partitions_def=media)
def x_is_fine(context):
    return dg.AssetCheckResult(passed=True, partition=context.partition_key)


def test_present_tables_and_columns_are_asked_once_absent_ones_every_time(tmp_path, monkeypatch):
    """Dagster asks whether the check table exists for every check evaluation, and for the asset
    table's columns for every asset event; once present, the answer is kept."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    write_instance_yaml(tmp_path, "kept-open")
    parent = next(c for c in KeptOpenSqliteEventLogStorage.__mro__ if c.__module__.startswith("dagster"))
    asked = []
    for name in ("has_table", "_has_asset_key_col_on_connection"):
        original = getattr(parent, name)
        monkeypatch.setattr(parent, name, lambda self, *args, original=original, name=name:
                            (asked.append((name, args[-1])), original(self, *args))[1])
    ids = [f"id-{n}" for n in range(6)]
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("ids", ids)
        for key in ids:
            assert dg.materialize([step, x_is_fine], instance=instance, partition_key=key).success
        storage = instance.event_log_storage
        assert asked.count(("has_table", "asset_check_executions")) <= 1
        assert asked.count(("_has_asset_key_col_on_connection", "last_materialization_timestamp")) == 1
        assert not storage.has_table("no_such_table") and not storage.has_table("no_such_table")
        assert asked.count(("has_table", "no_such_table")) == 2
        # and the evaluations were all stored, per partition
        records = storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("x"), "x_is_fine"), limit=100)
        assert sorted(r.partition for r in records) == ids


def asset_table(instance, keys: list[dg.AssetKey]) -> dict:
    """What the asset table says of each asset: its last materialization (partition, run, and
    whether it is the latest one stored, record for record) and the run last seen."""
    out = {}
    for record in instance.get_asset_records(keys):
        entry = record.asset_entry
        last = entry.last_materialization_record
        [latest] = instance.fetch_materializations(entry.asset_key, limit=1).records
        out[entry.asset_key.to_user_string()] = (last.event_log_entry.dagster_event.partition, last.run_id == latest.run_id,
                                                 last == latest, entry.last_run_id is not None)
    return out


@pytest.mark.parametrize("storage", ["dagster", "kept-open"])
def test_an_ops_asset_events_in_one_batch_leave_the_asset_table_as_one_by_one(tmp_path, monkeypatch, storage):
    """``log_asset_events`` (one write for the materializations and observations, the asset
    table upserted) and ``context.log_event`` (Dagster's, event by event) leave the same asset
    table: new assets, assets with a row, and an observation after a materialization."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    write_instance_yaml(tmp_path, storage)
    keys = [dg.AssetKey(name) for name in ("a", "b", "c")]

    def events(partition: str) -> list:
        return [dg.AssetMaterialization(asset_key=k, partition=partition, metadata={"n": 1}) for k in keys]

    @dg.op
    def report(context):
        context.instance.add_dynamic_partitions("ids", ["p1", "p2", "p3"])
        if storage == "dagster":
            for event in [*events("p1"), *events("p2"), dg.AssetObservation(asset_key="a", partition="p3")]:
                context.log_event(event)
        else:
            log_asset_events(context, events("p1"))  # three new rows
            log_asset_events(context, events("p2"))  # three rows updated
            log_asset_events(context, [dg.AssetObservation(asset_key="a", partition="p3")])

    with dg.DagsterInstance.get() as instance:
        assert dg.GraphDefinition(name="report", node_defs=[report]).to_job().execute_in_process(
            instance=instance).success
        assert asset_table(instance, keys) == {k.to_user_string(): ("p2", True, True, True) for k in keys}
        assert instance.get_latest_materialization_event(dg.AssetKey("c")).dagster_event.partition == "p2"
        [observed] = instance.fetch_observations(dg.AssetKey("a"), limit=1).records
        assert observed.partition_key == "p3"


def test_processes_that_make_the_same_runs_database_at_once_all_use_it(tmp_path, monkeypatch):
    """The daemon, a run and the webserver may open a new run's database at the same moment:
    each either makes it or finds it made, and every event is stored."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    write_instance_yaml(tmp_path, "kept-open")
    code = ("import sys, time, dagster as dg\n"
            "with dg.DagsterInstance.get() as instance:\n"
            "    storage = instance.event_log_storage\n"
            "    while time.time() < float(sys.argv[1]): pass\n"
            "    with storage.run_connection('the-run') as conn:\n"
            "        conn.exec_driver_sql(\"INSERT INTO event_logs (run_id, event, dagster_event_type, timestamp) \"\n"
            "                             \"VALUES ('the-run', '{}', NULL, CURRENT_TIMESTAMP)\")\n")
    with dg.DagsterInstance.get():  # the index, made once
        pass
    start = time.time() + 8  # all four started and waiting by then
    workers = [subprocess.Popen([sys.executable, "-c", code, str(start)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
               for _ in range(4)]
    errors = [w.communicate(timeout=120)[1] for w in workers]
    assert [w.returncode for w in workers] == [0] * 4, errors
    with sqlite3.connect(tmp_path / "history" / "runs" / "the-run.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM event_logs").fetchone() == (4,)
        assert conn.execute("SELECT COUNT(*) FROM alembic_version").fetchone() == (1,)

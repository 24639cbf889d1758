"""The local instance's event log: Dagster's SQLite event log storage, with connections kept open.

A media run writes several events per media ID (a materialization and check evaluations per
asset). Dagster's ``SqliteEventLogStorage`` opens a new SQLite connection for every write and
closes it after, and closing the last connection of a WAL database checkpoints it to disk, so
each event pays one or two checkpoints and fsyncs: about 8 ms per event on this project's
machines, more than the audio work of a short clip. This subclass keeps one connection per
database file open (the ``_db_lock`` that guards the parent's ``_connect`` already serialises
their use) and sets ``synchronous=NORMAL``, SQLite's recommended setting in WAL mode: a
transaction is durable once the WAL is synced at a checkpoint, and the database cannot be
corrupted by a crash. Same files, same schema, same layout: an instance can switch back and
forth (a failed run planned by this storage then shows its IDs Missing, not Failed, below).

It also writes a batch of events (``store_event_batch``) in one transaction per database,
where Dagster's SQLite storage writes them one by one. Dagster hands over batches only when
``DAGSTER_EVENT_BATCH_SIZE`` is set, so this storage sets it (to 1000) unless the environment
already does (``resources/dagster_settings.py``). The batches that matter here are the
"materialization planned" events Dagster writes when it creates a run: one per asset per media
ID, 6,000 for a run of 500 IDs over 12 assets, which made creating one such run take about 10 s.

It remembers which tables and asset-table columns exist once they do. Dagster's SQLite storage
asks again for every check evaluation (``supports_asset_checks`` opens a new engine and
connection for ``has_table``) and for every asset event (the asset table's columns): 28% of a
check event's cost and 7% of a materialization's in a profile of the dev stack's runs
(docs/BENCHMARKS.md). Only "present" is remembered: tables and columns are added by migrations,
never removed, so an answer of "absent" is asked again.

Last, it caches the list of dynamic partition keys, kept up to date by counts the database
keeps (``resources/partition_key_cache.py``): Dagster lists every key of ``media_ids`` once per
asset and per check each time it creates a run, which at 1,000,000 registered IDs took most of
the 4.8 s of CPU a run took to create.

And it stores a check planned over a run's IDs as one row per run, read back per ID
(``resources/check_plans.py``), where Dagster writes a row per ID that holds all N keys of the
run (N² bytes). And a run's planned materializations as one event per asset holding the run's
partitions, read back per partition (``PlannedSubsetsMixin``), where Dagster writes one per
asset and partition. ``resources/postgres_event_log.py`` applies those two changes and the key
cache to Dagster's PostgreSQL storage.

And ``log_asset_events`` lets an op store its own asset events as one batch, as Dagster
stores the materializations it derives from an op's outputs: the media stream reports a media
ID's materializations in one write per database instead of one per event.

Used by the local ``dagster.yaml`` (``dagster dev``); production uses PostgreSQL.

This module is on Dagster's private API (``dagster._core`` storage classes and their private
methods), as are ``resources/check_plans.py`` and ``resources/sqlite_storages.py``;
``tests/test_layers.py`` fails on private imports anywhere else. Dagster
offers no public hook for how its SQLite storage connects, writes batches, checks its schema or
lists partition keys, and documents SQLite as storage for local development only. What this
module waits for upstream (checked 2026-11-26):

- dagster-io/dagster#30172 (open): the SQLite storage is slow to read and write at volume;
- dagster-io/dagster#29567 (open pull request): listing every dynamic partition key when runs
  are requested is slow, and batched lookups are proposed instead;
- dagster-io/dagster#19618 (bulk writes of an op's events) was closed as stale without a hook,
  so ``log_asset_events`` builds the events with Dagster's batch metadata itself;
- the per-partition PLANNED check rows came with dagster-io/dagster PR #33231 (merged), which
  writes the whole event into each; no issue upstream asks for fewer rows yet;
- planned events are written synchronously at run creation (#33831), and Failed needs one per
  partition in Dagster's OSS storages; a per-partition failure state (#17836) would end that.

``tests/resources/test_sqlite_event_log.py`` runs it against the Dagster that
``requirements.lock`` pins, which ``scripts/lock.sh`` refreshes to the newest release the
integrations admit; a batch holding an event type this module does not mirror itself falls back
to Dagster's own one-by-one path. pyproject.toml sets no upper bound for it: if a Dagster newer
than the lock breaks it, point ``event_log_storage`` in ``dagster.yaml`` back at Dagster's own
SQLite storage (delete the block) and the instance reads the same files, only slower.
"""

import functools
import os
import sqlite3
import sys
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any, cast

import dagster as dg
import sqlalchemy as db
from alembic.script import ScriptDirectory
from dagster import DagsterEventType, Field
from dagster._config import StringSource
from dagster._core.events import EVENT_TYPE_TO_PIPELINE_RUN_STATUS, DagsterEvent, DagsterEventBatchMetadata
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.base import PlannedMaterializationInfo
from dagster._core.storage.event_log.schema import (
    AssetCheckExecutionsTable,
    AssetKeyTable,
    SqlEventLogStorageMetadata,
    SqlEventLogStorageTable,
)
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
    SqliteEventLogStorageWatchdog,
)
from dagster._core.storage.sql import get_alembic_config
from dagster._time import datetime_from_timestamp
from dagster_shared.serdes import deserialize_value
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import CreateIndex, CreateTable
from watchdog.observers import Observer

from resources import dagster_settings, partition_key_cache
from resources.check_plans import RUN_PLAN, CheckPlansMixin, key_pattern

# Run shards are one file per run; a long-lived webserver reads many. Keep the newest few open.
MAX_OPEN_SHARDS = 16
# asset events that the index database mirrors (as SqliteEventLogStorage.store_event does)
MIRRORED_ASSET_EVENTS = {DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.ASSET_OBSERVATION,
                         DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
                         DagsterEventType.ASSET_FAILED_TO_MATERIALIZE}


class PresentSchemaMixin:
    """Remembers which tables and asset-table columns exist once they do: Dagster's SQL storages
    ask the database each time (SQLite for every check evaluation and asset event, PostgreSQL
    before every partition key lookup). Only "present" is remembered: migrations add tables and
    columns, never remove them, so an answer of "absent" is asked again."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._present: set[str] = set()  # tables, and asset-table columns as "asset_keys.<column>"
        super().__init__(*args, **kwargs)

    def has_table(self, table_name: str) -> bool:
        if table_name not in self._present and super().has_table(table_name):  # type: ignore[misc]
            self._present.add(table_name)
        return table_name in self._present

    def _has_asset_key_col_on_connection(self, conn, column_name: str) -> bool:
        key = f"{AssetKeyTable.name}.{column_name}"
        if key not in self._present and super()._has_asset_key_col_on_connection(conn, column_name):  # type: ignore[misc]
            self._present.add(key)
        return key in self._present


class PlannedSubsetsMixin:
    """Planned materializations stored as Dagster's ``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS``
    stores them, one event per asset holding the run's partition subset, and read back per
    partition, so that Dagster's Failed and in-progress statuses and a partition's latest run stay
    what they are with an event per partition.

    Dagster writes a planned event per asset and partition when it creates a run: 6,500 for a
    run of 500 media IDs, most of the 1.4 s of daemon CPU such a run takes to create
    (docs/BENCHMARKS.md). With one per asset, run creation costs 0.34 s, but Dagster's SQL
    storages find a partition's planned attempts only in events that name one partition
    (``_latest_event_ids_by_partition_subquery``), so a failed run would leave its IDs Missing.
    The two readers of those attempts are answered here from both kinds of planned event: the
    attempts without a later materialization (the partition status cache's only source of Failed
    and in-progress partitions) and a partition's latest planned run (the UI's "latest run" of a
    partition). Dagster's own answers for older per-partition events are kept and merged."""

    @property
    def supports_partition_subset_in_asset_materialization_planned_events(self) -> bool:
        return True

    def get_latest_asset_partition_materialization_attempts_without_materializations(
            self, asset_key, after_storage_id: int | None = None):
        attempts = dict(super().get_latest_asset_partition_materialization_attempts_without_materializations(  # type: ignore[misc]
            asset_key, after_storage_id=after_storage_id))
        planned: dict[str, tuple[str, int]] = {}
        for storage_id, run_id, keys in self._planned_subsets(asset_key, after_storage_id):
            planned.update(dict.fromkeys(keys, (run_id, storage_id)))  # ascending: the latest wins
        if not planned:
            return attempts
        made = self._latest_materialization_ids(asset_key, list(planned))
        for partition, (run_id, storage_id) in planned.items():
            if made.get(partition, 0) > storage_id or attempts.get(partition, ("", 0))[1] > storage_id:
                continue
            attempts[partition] = (run_id, storage_id)
        return attempts

    def get_latest_planned_materialization_info(self, asset_key, partition: str | None = None):
        info = super().get_latest_planned_materialization_info(asset_key, partition)  # type: ignore[misc]
        if partition is None:  # the latest planned event of any kind: Dagster's own answer
            return info
        for storage_id, run_id, keys in self._planned_subsets(asset_key, None, newest_first=True,
                                                              like=key_pattern(partition)):
            if info is not None and info.storage_id > storage_id:
                break
            if partition in keys:
                return PlannedMaterializationInfo(storage_id=storage_id, run_id=run_id)
        return info

    def _planned_subsets(self, asset_key, after_storage_id: int | None, newest_first: bool = False,
                         like: str | None = None):
        """(storage ID, run ID, partition keys) of the asset's planned events with a partition
        subset, after ``after_storage_id``, oldest first (or newest first); ``like``: only
        those whose serialised event matches that SQL pattern."""
        table = SqlEventLogStorageTable
        query = db.select(table.c.id, table.c.run_id, table.c.event).where(
            table.c.asset_key == asset_key.to_string(), table.c.partition.is_(None),
            table.c.dagster_event_type == DagsterEventType.ASSET_MATERIALIZATION_PLANNED.value)
        if after_storage_id is not None:
            query = query.where(table.c.id > after_storage_id)
        if like is not None:
            query = query.where(table.c.event.like(like, escape="\\"))
        query = self._add_assets_wipe_filter_to_query(  # type: ignore[attr-defined]
            query, self._get_assets_details([asset_key]), [asset_key])  # type: ignore[attr-defined]
        query = query.order_by(table.c.id.desc() if newest_first else table.c.id.asc())
        with self.index_connection() as conn:  # type: ignore[attr-defined]
            for storage_id, run_id, body in conn.execute(query):
                subset = deserialize_value(body, EventLogEntry).get_dagster_event().partitions_subset
                if subset is not None:
                    yield storage_id, run_id, subset.get_partition_keys()

    def _latest_materialization_ids(self, asset_key, partitions: list[str]) -> dict[str, int]:
        latest: dict[str, int] = {}
        for start in range(0, len(partitions), 1000):
            subquery = self._latest_event_ids_by_partition_subquery(  # type: ignore[attr-defined]
                asset_key, [DagsterEventType.ASSET_MATERIALIZATION], asset_partitions=partitions[start:start + 1000])
            with self.index_connection() as conn:  # type: ignore[attr-defined]
                latest.update({row.partition: row.id for row in conn.execute(
                    db.select(subquery.c.partition, subquery.c.id))})
        return latest


class KeptOpenSqliteEventLogStorage(PresentSchemaMixin, CheckPlansMixin, PlannedSubsetsMixin,
                                     partition_key_cache.CachedKeysMixin, SqliteEventLogStorage):
    """``SqliteEventLogStorage`` with a persistent connection per shard. ``base_dir`` defaults to
    where Dagster's default SQLite storage keeps event logs, ``$DAGSTER_HOME/history/runs``."""

    def __init__(self, base_dir: str | None = None, inst_data=None):
        if base_dir is None:
            base_dir = in_dagster_home(type(self).__name__, "history", "runs")
        self._engines: OrderedDict[str, db.engine.Engine] = OrderedDict()
        self._engines_pid = os.getpid()
        self._partition_keys = partition_key_cache.shared(os.path.abspath(base_dir))
        dagster_settings.apply_defaults()
        super().__init__(base_dir, inst_data)

    @classmethod
    def config_type(cls):
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> db.engine.Engine:
        if self._engines_pid != os.getpid():  # a forked child must not share its parent's handles
            self._engines, self._engines_pid = OrderedDict(), os.getpid()
        engine = self._engines.get(shard)
        if engine is not None:
            self._engines.move_to_end(shard)
            return engine
        engine = db.create_engine(
            self.conn_string_for_shard(shard),
            poolclass=StaticPool,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
        )
        db.event.listen(engine, "connect", set_synchronous_normal)
        db.event.listen(engine, "invalidate", _end_transaction)
        if shard not in self._initialized_dbs:
            self._initdb(engine)
            self._initialized_dbs.add(shard)
        if shard == INDEX_SHARD_NAME:
            with engine.begin() as conn:
                partition_key_cache.install(conn, partition_key_cache.SQLITE_INSTALL)
        self._engines[shard] = engine
        while len(self._engines) > MAX_OPEN_SHARDS:
            _, oldest = self._engines.popitem(last=False)
            oldest.dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str):
        with self._db_lock, self._engine(shard).connect() as conn, conn.begin():
            yield conn

    def _initdb(self, engine: db.engine.Engine, for_index_shard: bool = False) -> None:
        """A database at Alembic's head is left as it is, and a new, empty one gets Dagster's
        tables, WAL and the head's stamp directly; any other goes through Dagster's ``_initdb``.

        Dagster's checks a database's schema revision against Alembic's head, which Alembic finds
        by loading every migration script, and stamps a new database by loading them again: for
        each run's database, which the daemon creates with the run's planned events (py-spy: a
        third of the daemon's samples while it created a 100,000-ID backfill's 200 runs), and for
        the index in every instance the code server makes for a sensor tick. Here the tables are
        made in one transaction (Dagster's ``create_all`` committed each of 40 statements on its
        own), by statements compiled once per process, and the revision is read by the driver:
        SQLAlchemy's and Alembic's inspection were a tenth of the daemon's samples."""
        head = alembic_head_revision(SqliteEventLogStorage.__module__)
        try:
            with engine.connect() as conn:
                sqlite = cast(sqlite3.Connection, conn.connection.driver_connection)
                tables = {name for (name,) in sqlite.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if "alembic_version" in tables:
                    if sqlite.execute("SELECT version_num FROM alembic_version").fetchall() == [(head,)]:
                        return
                elif not tables:
                    sqlite.execute("PRAGMA journal_mode=WAL")
                    sqlite.execute("BEGIN")
                    try:
                        for statement in _new_database_ddl():
                            sqlite.execute(statement)
                        sqlite.execute("INSERT INTO alembic_version (version_num) VALUES (?)", (head,))
                    except sqlite3.DatabaseError:
                        sqlite.rollback()
                        raise
                    sqlite.execute("COMMIT")
                    return
        except sqlite3.DatabaseError:  # another process is making it: Dagster's way, with its retries
            pass
        super()._initdb(engine, for_index_shard=for_index_shard)

    def store_event_batch(self, events) -> None:
        """One transaction in the run's database and one in the index for the whole batch, each
        event serialised once. The rows are those ``store_event`` writes for each event (a planned
        check's, ``CheckPlansMixin``'s); the asset table, which keeps only the latest event per
        asset, is updated with each asset's last."""
        run_ids = {event.run_id for event in events}
        types = {event.get_dagster_event().event_type for event in events if event.is_dagster_event}
        if not events or len(run_ids) != 1 or not types <= MIRRORED_ASSET_EVENTS | {
                DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED}:
            super().store_event_batch(events)  # one by one
            return
        rows = [self._event_to_row(event) for event in events]
        with self.run_connection(run_ids.pop()) as conn:
            conn.execute(SqlEventLogStorageTable.insert(), rows)
        with self.index_transaction() as conn:
            inserted = conn.execute(
                SqlEventLogStorageTable.insert().returning(SqlEventLogStorageTable.c.id,
                                                           sort_by_parameter_order=True), rows)
            event_ids = [row[0] for row in inserted]
            assets = [(e, i, row["event"]) for e, i, row in zip(events, event_ids, rows, strict=True)
                      if e.get_dagster_event().event_type in MIRRORED_ASSET_EVENTS]
            self._store_asset_event_tags(conn, [e for e, _, _ in assets], [i for _, i, _ in assets])
            last_per_asset = {e.get_dagster_event().asset_key: (e, i, serialized) for e, i, serialized in assets}
            self._store_asset_entries(conn, list(last_per_asset.values()))
            self.insert_check_plans(conn, [(e, i, row["event"]) for e, i, row in zip(events, event_ids, rows, strict=True)])

    def store_event(self, event: EventLogEntry) -> None:
        """An asset event alone, as a batch of one: Dagster stores a batch of one by this method,
        whose asset-table write is an insert, a caught conflict and an update, and which
        serialises a materialization twice (the media stream's reports often are one event)."""
        if event.is_dagster_event and event.get_dagster_event().event_type in MIRRORED_ASSET_EVENTS:
            self.store_event_batch([event])
        else:
            super().store_event(event)

    def _store_asset_entries(self, conn, events: list[tuple[EventLogEntry, int, str]]) -> None:
        """Each asset's row in the asset table as ``_store_asset_event`` leaves it after the
        event (given with its storage ID and its serialised form), in one upsert per kind of
        event: Dagster's tries an insert and, when the asset has a row, catches the conflict and
        updates it (two statements and an exception per event). A materialization's record is
        the serialised event wrapped, not serialised again (a third of a batch's CPU)."""
        has_index_columns = self._has_asset_key_index_cols_on_connection(conn)
        by_columns: dict[tuple[str, ...], list[dict]] = {}
        for event, event_id, serialized in events:
            if event.get_dagster_event().is_step_materialization:
                values = {"last_materialization": _serialized_record(event_id, serialized), "last_run_id": event.run_id,
                          **({"last_materialization_timestamp": datetime_from_timestamp(event.timestamp)}
                             if has_index_columns else {})}
            else:
                values = self._get_asset_entry_values(event, event_id, has_index_columns)
            asset_key = event.get_dagster_event().asset_key
            if values and asset_key is not None:
                by_columns.setdefault(tuple(sorted(values)), []).append({"asset_key": asset_key.to_string(), **values})
        for columns, rows in by_columns.items():
            conn.execute(_asset_upsert(columns), rows)

    def watch(self, run_id, cursor, callback) -> None:
        """As the parent, but the watcher also wakes on writes to the WAL file: with connections
        kept open, the main database file changes only at checkpoints."""
        if not self._obs:
            observer: Any = Observer()  # Dagster's class types the attribute None until it starts one
            observer.start()
            self._obs = observer
        watchdog = _WalAwareWatchdog(self, run_id, callback, cursor)
        scheduled = cast(Any, self._obs).schedule(watchdog, self._base_dir, recursive=True)
        self._watchers[run_id][callback] = (watchdog, scheduled)

    def dispose(self) -> None:
        with self._db_lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()
        super().dispose()


class _WalAwareWatchdog(SqliteEventLogStorageWatchdog):
    def __init__(self, event_log_storage, run_id, callback, cursor):
        super().__init__(event_log_storage, run_id, callback, cursor)
        self._patterns = [self._log_path, self._log_path + "-wal"]  # PatternMatchingEventHandler's

    def on_modified(self, event) -> None:
        self._process_log()


# Alembic's version table, as its stamp creates it
_ALEMBIC_VERSION = db.Table("alembic_version", db.MetaData(), db.Column("version_num", db.String(32), nullable=False),
                            db.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"))


@functools.cache
def _asset_upsert(columns: tuple[str, ...]) -> db.sql.Insert:
    """The asset table's upsert of ``columns``, built once (building it was 7% of creating a run)."""
    upsert = sqlite_insert(AssetKeyTable)
    return upsert.on_conflict_do_update(index_elements=[AssetKeyTable.c.asset_key],
                                        set_={c: upsert.excluded[c] for c in columns})


@functools.cache
def _new_database_ddl() -> tuple[str, ...]:
    """The statements ``create_all`` runs for Dagster's event log tables on a new SQLite
    database, and Alembic's version table, compiled."""
    dialect = sqlite_dialect()
    tables = [*SqlEventLogStorageMetadata.sorted_tables, _ALEMBIC_VERSION]
    statements: list[CreateTable | CreateIndex] = []
    for table in tables:
        statements += [CreateTable(table), *(CreateIndex(index) for index in table.indexes)]
    return tuple(str(statement.compile(dialect=dialect)) for statement in statements)


@functools.cache
def alembic_head_revision(storage_module: str) -> str:
    """Alembic's head revision for the Dagster storage class of ``storage_module`` (a constant
    of the installed Dagster; finding it loads every migration script)."""
    config = get_alembic_config(sys.modules[storage_module].__file__)
    return str(ScriptDirectory.from_config(config).as_revision_number("head"))


def in_dagster_home(owner: str, *parts: str) -> str:
    """Where Dagster's default instance keeps a storage's files: ``$DAGSTER_HOME/<parts>``."""
    if not os.environ.get("DAGSTER_HOME"):
        raise ValueError(f"{owner} needs `base_dir` in its config or DAGSTER_HOME set")
    return os.path.join(os.environ["DAGSTER_HOME"], *parts)


def _serialized_record(storage_id: int, serialized_event: str) -> str:
    """``serialize_value(EventLogRecord(storage_id, event))`` from the event's serialised form."""
    return f'{{"__class__": "EventLogRecord", "event_log_entry": {serialized_event}, "storage_id": {int(storage_id)}}}'


def set_synchronous_normal(dbapi_connection, _record) -> None:
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def _end_transaction(dbapi_connection, _record, _exception) -> None:
    """Roll back the transaction of a connection SQLAlchemy is about to drop.

    SQLAlchemy drops a connection when an interrupt (Dagster's run termination, Ctrl-C) lands
    inside a statement. It closes the connection, but SQLite closes it only once its statements
    are finalised, and the interrupted statement lives on in a reference cycle through the
    traceback until the garbage collector runs: meanwhile the connection keeps its transaction
    open and every other writer of that database waits for the lock and fails ("database is
    locked"), the terminated run's own last events too. Ending the transaction first lets go
    of the lock whatever becomes of the statement."""
    try:
        dbapi_connection.rollback()
    except sqlite3.Error:  # nothing to roll back, or the connection is gone already
        pass


# What a finished run leaves that Dagster's status and lineage still read (resources/retention.py).
_KEPT_TYPES_MATERIALIZED = ("ASSET_MATERIALIZATION", "ASSET_OBSERVATION")
_KEPT_TYPES_ATTEMPTED = ("ASSET_MATERIALIZATION_PLANNED", "ASSET_FAILED_TO_MATERIALIZE")
_RUN_STATUS_TYPES = tuple(t.value for t in EVENT_TYPE_TO_PIPELINE_RUN_STATUS)
CHECK_ROWS_BY_PARTITION = "klio_asset_check_executions_by_partition"


def _quoted(types: tuple[str, ...]) -> str:
    return ", ".join(f"'{t}'" for t in types)


def _none_newer(table: str, row: str, same: str) -> str:
    """SQL: no row of ``table`` newer than ``row`` matches ``same`` and has ``row``'s partition.
    Written as two cases, so that each uses an index (Dagster's PostgreSQL index by partition
    is partial: partition not null)."""
    def newer(partition: str) -> str:
        return f"NOT EXISTS (SELECT 1 FROM {table} n WHERE {same} AND {partition} AND n.id > {row}.id)"
    return (f"(({row}.partition IS NOT NULL AND {newer(f'n.partition = {row}.partition')})"
            f" OR ({row}.partition IS NULL AND {newer('n.partition IS NULL')}))")


def _latest_check_row(c: str) -> str:
    """SQL: the check row ``c`` is the latest of its check and partition."""
    return _none_newer("asset_check_executions", c, f"n.asset_key = {c}.asset_key AND n.check_name = {c}.check_name")


def _run_plan(c: str) -> str:
    """SQL: the check row ``c`` is a run's plan over its partitions (``resources/check_plans.py``),
    read back per partition: kept with its run."""
    return f"{c}.partition = '{RUN_PLAN}'"


def _kept_event(e: str, run_failed: bool, run_partitioned: bool) -> str:
    """SQL: the event ``e`` of a finished run is still read. It is a run status change, the latest
    materialization or observation of its asset and partition, the latest planned (or failed)
    attempt with no materialization after it (Dagster's Failed status), or the evaluation of a
    check row that is still the latest of its check and partition. In a run over partitions, a
    planned event of no partition holds the run's partition subset (``PlannedSubsetsMixin``
    reads each of its IDs back): kept when the run failed, and only then."""
    same_asset = f"n.asset_key = {e}.asset_key"
    latest = _none_newer("event_logs", e, f"{same_asset} AND n.dagster_event_type = {e}.dagster_event_type")
    unanswered = _none_newer("event_logs", e, f"{same_asset} AND n.dagster_event_type IN "
                                              f"({e}.dagster_event_type, 'ASSET_MATERIALIZATION')")
    checked = (f"{e}.id IN (SELECT c.evaluation_event_storage_id FROM asset_check_executions c WHERE "
               f"c.run_id = {e}.run_id AND c.evaluation_event_storage_id IS NOT NULL AND "
               f"({_latest_check_row('c')} OR {_run_plan('c')}))")
    subset = f"{e}.dagster_event_type = 'ASSET_MATERIALIZATION_PLANNED' AND {e}.partition IS NULL"
    if run_partitioned:
        unanswered = f"{unanswered} AND NOT ({subset})"
    return (f"({e}.dagster_event_type IS NOT NULL AND ({e}.dagster_event_type IN ({_quoted(_RUN_STATUS_TYPES)})"
            f"{f' OR ({subset})' if run_partitioned and run_failed else ''}"
            f" OR ({e}.dagster_event_type IN ({_quoted(_KEPT_TYPES_MATERIALIZED)}) AND {latest})"
            f" OR ({e}.dagster_event_type IN ({_quoted(_KEPT_TYPES_ATTEMPTED)}) AND {unanswered})"
            f" OR {checked}))")


def index_check_rows_by_partition(storage) -> None:
    """Add the index that makes "a newer row of this check and partition" one lookup (before the
    first ``trim_run_events``; idempotent)."""
    with storage.index_transaction() as conn:
        conn.execute(db.text(f"CREATE INDEX IF NOT EXISTS {CHECK_ROWS_BY_PARTITION} "
                             "ON asset_check_executions (asset_key, check_name, partition, id)"))


def trim_run_events(storage, run_id: str, run_failed: bool = False, run_partitioned: bool = False
                    ) -> tuple[int, int, int]:
    """Delete what nothing reads any more from the index (the only database on PostgreSQL) for
    the finished run ``run_id`` (which failed or not, over partitions or not): its events that
    ``_kept_event`` does not keep, their asset tags, and its check rows that a newer row of the
    same check and partition supersedes. One transaction. Returns (events deleted, asset and
    check events kept, check rows deleted)."""
    keeps = _kept_event("e", run_failed, run_partitioned)
    doomed = f"SELECT e.id FROM event_logs e WHERE e.run_id = :run_id AND NOT {keeps}"
    params = {"run_id": run_id}
    with storage.index_transaction() as conn:
        conn.execute(db.text(f"DELETE FROM asset_event_tags WHERE event_id IN ({doomed})"), params)
        events = conn.execute(db.text(f"DELETE FROM event_logs WHERE id IN ({doomed})"), params).rowcount
        checks = conn.execute(db.text("DELETE FROM asset_check_executions WHERE run_id = :run_id AND NOT "
                                      f"({_latest_check_row('asset_check_executions')} OR "
                                      f"{_run_plan('asset_check_executions')})"), params).rowcount
        kept = conn.execute(db.text("SELECT COUNT(*) FROM event_logs WHERE run_id = :run_id AND "
                                    f"dagster_event_type NOT IN ({_quoted(_RUN_STATUS_TYPES)})"),
                            params).scalar_one()
    return events, kept, checks


def delete_run_check_rows(storage, run_id: str) -> int:
    """Delete the check rows of ``run_id`` (Dagster's ``delete_run`` leaves them)."""
    with storage.index_transaction() as conn:
        return conn.execute(AssetCheckExecutionsTable.delete().where(
            AssetCheckExecutionsTable.c.run_id == run_id)).rowcount


def trim_run_shard(storage, run_id: str) -> int:
    """On SQLite, where a run's own database holds its log apart from the index: delete the events
    of ``run_id``'s database that the index no longer holds (matched by type, asset, partition and
    time; run status changes stay), then VACUUM that file. Returns the events deleted (0 on a
    storage without run shards)."""
    if not isinstance(storage, SqliteEventLogStorage):
        return 0
    columns = "dagster_event_type, asset_key, partition, timestamp"
    with storage.index_connection() as conn:
        kept = set(conn.execute(db.text(f"SELECT {columns} FROM event_logs WHERE run_id = :run_id"),
                                {"run_id": run_id}).all())
    with storage.run_connection(run_id) as conn:
        rows = conn.execute(db.text(f"SELECT id, {columns} FROM event_logs")).all()
        doomed = [row[0] for row in rows if tuple(row[1:]) not in kept and row[1] not in _RUN_STATUS_TYPES]
        for start in range(0, len(doomed), 500):  # within SQLite's limit on bound parameters
            conn.execute(SqlEventLogStorageTable.delete().where(SqlEventLogStorageTable.c.id.in_(doomed[start:start + 500])))
    if doomed:
        vacuum(storage.path_for_shard(run_id))
    return len(doomed)


def remove_run_shard(storage, run_id: str) -> None:
    """On SQLite: close and delete ``run_id``'s own database file (a deleted run's events are gone
    from it, but Dagster leaves the file)."""
    if not isinstance(storage, SqliteEventLogStorage):
        return
    engines = getattr(storage, "_engines", None)
    if engines is not None:
        with storage._db_lock:
            engine = engines.pop(run_id, None)
            if engine is not None:
                engine.dispose()
    path = storage.path_for_shard(run_id)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)


def vacuum_index(storage) -> None:
    """VACUUM a SQLite storage's index database (nothing on other storages)."""
    if isinstance(storage, SqliteEventLogStorage):
        vacuum(storage.path_for_shard(INDEX_SHARD_NAME))


def vacuum(path: str) -> None:
    """VACUUM the SQLite database at ``path``: give the pages of deleted rows back to the disk.
    In WAL mode the copy goes through the WAL file first: a TRUNCATE checkpoint empties it."""
    connection = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_SECONDS, isolation_level=None)
    try:
        connection.execute("VACUUM")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()


def log_asset_events(context: dg.OpExecutionContext,
                     events: Sequence[dg.AssetMaterialization | dg.AssetObservation | dg.AssetCheckEvaluation]) -> None:
    """Store an op's own asset events, each as ``context.log_event`` stores it, but the
    materializations and observations as one batch (``store_event_batch``: one transaction per
    database here and in ``resources/postgres_event_log.py``), and the check evaluations after
    them (Dagster has no batch for those). Stored when this returns, as with ``log_event``.

    Unlike ``log_event``, it does not also keep each event for the op's result until the op
    returns: a stream run that reports for an hour would hold every event it stored in memory.
    Dagster batches only when ``DAGSTER_EVENT_BATCH_SIZE`` is set (this storage sets it); else
    the events are stored one by one."""
    step = context.get_step_execution_context()
    batched = [e for e in events if isinstance(e, dg.AssetMaterialization | dg.AssetObservation)]
    batch_id = uuid.uuid4().hex
    for i, event in enumerate(batched):
        end = DagsterEventBatchMetadata(batch_id, is_end=i == len(batched) - 1)
        if isinstance(event, dg.AssetMaterialization):
            DagsterEvent.asset_materialization(step, event, end)
        else:
            DagsterEvent.asset_observation(step, event, end)
    for evaluation in events:
        if isinstance(evaluation, dg.AssetCheckEvaluation):
            DagsterEvent.asset_check_evaluation(step, evaluation)

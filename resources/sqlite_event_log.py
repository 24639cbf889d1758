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
forth.

Used by the local ``dagster.yaml`` (``dagster dev``); production uses PostgreSQL.
"""

import os
from collections import OrderedDict
from contextlib import contextmanager

import sqlalchemy as db
from dagster import Field
from dagster import _check as check
from dagster._config import StringSource
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
    SqliteEventLogStorageWatchdog,
)
from sqlalchemy.pool import StaticPool

# Run shards are one file per run; a long-lived webserver reads many. Keep the newest few open.
MAX_OPEN_SHARDS = 16


class KeptOpenSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` with a persistent connection per shard. ``base_dir`` defaults to
    where Dagster's default SQLite storage keeps event logs, ``$DAGSTER_HOME/history/runs``."""

    def __init__(self, base_dir: str | None = None, inst_data=None):
        if base_dir is None:
            if not os.environ.get("DAGSTER_HOME"):
                raise ValueError("KeptOpenSqliteEventLogStorage needs `base_dir` in its config or DAGSTER_HOME set")
            base_dir = os.path.join(os.environ["DAGSTER_HOME"], "history", "runs")
        self._engines: OrderedDict[str, db.engine.Engine] = OrderedDict()
        self._engines_pid = os.getpid()
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
        db.event.listen(engine, "connect", _set_synchronous_normal)
        if shard not in self._initialized_dbs:
            self._initdb(engine)
            self._initialized_dbs.add(shard)
        self._engines[shard] = engine
        while len(self._engines) > MAX_OPEN_SHARDS:
            _, oldest = self._engines.popitem(last=False)
            oldest.dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str):
        with self._db_lock:
            check.str_param(shard, "shard")
            with self._engine(shard).connect() as conn, conn.begin():
                yield conn

    def watch(self, run_id, cursor, callback) -> None:
        """As the parent, but the watcher also wakes on writes to the WAL file: with connections
        kept open, the main database file changes only at checkpoints."""
        if not self._obs:
            from watchdog.observers import Observer  # noqa: PLC0415 (as the parent does)

            self._obs = Observer()
            self._obs.start()
        watchdog = _WalAwareWatchdog(self, run_id, callback, cursor)
        self._watchers[run_id][callback] = (watchdog, self._obs.schedule(watchdog, self._base_dir, recursive=True))

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


def _set_synchronous_normal(dbapi_connection, _record) -> None:
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")

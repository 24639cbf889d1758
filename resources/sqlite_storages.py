"""The local instance's run and schedule storages: Dagster's SQLite ones, keeping their connections
open and asking Alembic for its head revision once per process.

Dagster's SQLite run and schedule storages build a new engine and open a new connection for every
query (``NullPool``), and closing the last connection to a WAL database checkpoints it. And each
time an instance is made, they check the database's schema revision against Alembic's head, which
Alembic computes by loading every migration script. The daemon queries these storages several
times a second, and the code server makes a new instance for every sensor tick: py-spy on the idle
media-stream stack put a third of the daemon's CPU in opening and closing connections, and 10 of
the code server's 24 busy samples in that revision check (docs/BENCHMARKS.md).

Here each storage keeps a small pool of connections per process (never shared with a forked
child), with ``synchronous=NORMAL``, SQLite's setting for WAL; and a database whose revision is
Alembic's head, with its tables, is opened without Dagster's check. Any other database (new, older,
or without the tables) goes through Dagster's own ``from_local``, which creates, stamps or refuses
it. Same files and schema: an instance can switch back to Dagster's classes at any time. Used by
the project's ``dagster.yaml``; production's PostgreSQL storages are in ``postgres_storages.py``.
"""

import os
from contextlib import contextmanager
from typing import Any

import sqlalchemy as db
from alembic.runtime.migration import MigrationContext
from dagster import Field, StringSource
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.runs import SqliteRunStorage
from dagster._core.storage.schedules import SqliteScheduleStorage
from dagster._core.storage.sqlite import create_db_conn_string

from resources.sqlite_event_log import alembic_head_revision, in_dagster_home, set_synchronous_normal

# Connections kept per process; a thread that finds them all in use opens another, which closes when
# returned (never waits: the daemon's sensor and backfill threads may all query at once).
POOL_SIZE = 2


class KeptOpenSqliteMixin:
    """For a Dagster SQLite storage whose ``connect`` opens a connection per query."""

    DB_NAME: str  # the file's name without ".db", as Dagster's class names it
    DEFAULT_DIR: tuple[str, ...]  # where Dagster's default instance keeps it, under DAGSTER_HOME
    TABLE: str  # a table Dagster's ``from_local`` creates
    ALEMBIC_OF: str  # the module of Dagster's storage class, beside which its Alembic config is found
    _conn_string: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # Dagster's (conn_string, inst_data)
        super().__init__(*args, **kwargs)
        self._kept_engine: db.engine.Engine | None = None
        self._kept_pid = os.getpid()

    @classmethod
    def config_type(cls):
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data, config_value: Any):
        base_dir = config_value.get("base_dir")
        if base_dir is None:
            base_dir = in_dagster_home(cls.__name__, *cls.DEFAULT_DIR)
        return cls.from_local(base_dir, inst_data=inst_data)

    @classmethod
    def from_local(cls, base_dir: str, inst_data=None):
        conn_string = create_db_conn_string(base_dir, cls.DB_NAME)
        if os.path.exists(os.path.join(base_dir, f"{cls.DB_NAME}.db")) and _at_head(conn_string, cls.TABLE,
                                                                                     cls.ALEMBIC_OF):
            return cls(conn_string, inst_data)
        return super().from_local(base_dir, inst_data=inst_data)  # type: ignore[misc]  # Dagster's: creates, stamps or refuses it

    @contextmanager
    def connect(self):
        with self._engine().connect() as conn, conn.begin():
            yield conn

    def _engine(self) -> db.engine.Engine:
        if self._kept_engine is None or self._kept_pid != os.getpid():  # a forked child opens its own
            self._kept_engine = db.create_engine(
                self._conn_string, pool_size=POOL_SIZE, max_overflow=-1,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False})
            db.event.listen(self._kept_engine, "connect", set_synchronous_normal)
            self._kept_pid = os.getpid()
        return self._kept_engine

    def dispose(self) -> None:
        if self._kept_engine is not None and self._kept_pid == os.getpid():
            self._kept_engine.dispose()
        self._kept_engine = None
        super().dispose()  # type: ignore[misc]  # Dagster's storage's


class KeptOpenSqliteRunStorage(KeptOpenSqliteMixin, SqliteRunStorage):
    """``SqliteRunStorage`` with its connections kept open. ``base_dir`` defaults to Dagster's
    default, ``$DAGSTER_HOME/history``."""

    DB_NAME, DEFAULT_DIR, TABLE = "runs", ("history", ""), "instance_info"
    ALEMBIC_OF = SqliteRunStorage.__module__


class KeptOpenSqliteScheduleStorage(KeptOpenSqliteMixin, SqliteScheduleStorage):
    """``SqliteScheduleStorage`` with its connections kept open. ``base_dir`` defaults to
    Dagster's default, ``$DAGSTER_HOME/schedules``."""

    DB_NAME, DEFAULT_DIR, TABLE = "schedules", ("schedules",), "job_ticks"
    ALEMBIC_OF = SqliteScheduleStorage.__module__


def _at_head(conn_string: str, table: str, alembic_of: str) -> bool:
    """Whether the database is at Alembic's head revision and has ``table``: two reads."""
    engine = db.create_engine(conn_string, poolclass=db.pool.NullPool)
    try:
        with engine.connect() as conn:
            revision = MigrationContext.configure(conn).get_current_revision()
            present = db.inspect(conn).has_table(table)
    finally:
        engine.dispose()
    return present and revision is not None and revision == alembic_head_revision(alembic_of)

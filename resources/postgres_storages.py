"""The production instance's run and schedule storages: Dagster's PostgreSQL ones, each keeping one
connection open per process (``KeptOpenConnectionMixin``, which the project's PostgreSQL event
log uses too).

dagster-postgres opens a new connection for every query outside the webserver (``NullPool``),
about 9 ms each on this project's machines. The run storage is asked for every run the
backfill daemon creates (whether it exists, then to add it) and the schedule storage for every
sensor tick: py-spy on the daemon creating a 100,000-ID backfill's runs put 12.5% of its time in
``get_run_by_id`` alone (docs/BENCHMARKS.md). Same tables and schema: an instance can switch back
to ``dagster_postgres``' classes at any time. Used by ``deploy/dagster.yaml``; Dagster's Helm
chart writes its own classes into its instance ConfigMap (docs/deploy.md).
"""

import os
from typing import Any

import sqlalchemy as db
from dagster_postgres import PostgresRunStorage, PostgresScheduleStorage
from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_url_from_config


class KeptOpenConnectionMixin:
    """For a dagster-postgres storage: one connection kept open per process, as Dagster's webserver
    keeps for itself (``optimize_for_webserver``, with the webserver's default pool settings),
    checked before use (``pool_pre_ping``) and never shared with a forked child."""

    # the webserver's defaults for its own pool (dagster-webserver --db-pool-recycle, --db-pool-max-overflow)
    POOL_RECYCLE_S = 3600
    POOL_MAX_OVERFLOW = 20

    postgres_url: str
    _engine: db.engine.Engine
    _token_provider: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._engine.dispose()  # Dagster's connection-per-query engine, used to create the tables
        self._engine = create_pg_engine(self.postgres_url, self._token_provider, isolation_level="AUTOCOMMIT",
                                        pool_size=1, max_overflow=self.POOL_MAX_OVERFLOW,
                                        pool_recycle=self.POOL_RECYCLE_S, pool_pre_ping=True)
        db.event.listen(self._engine, "connect", _note_process)
        db.event.listen(self._engine, "checkout", _not_from_a_parent_process)

    @classmethod
    def from_config_value(cls, inst_data, config_value: Any):
        return cls(inst_data=inst_data, postgres_url=pg_url_from_config(config_value),
                   should_autocreate_tables=config_value.get("should_autocreate_tables", True),
                   token_provider=get_token_provider_from_config(config_value))


class KeptOpenPostgresRunStorage(KeptOpenConnectionMixin, PostgresRunStorage):
    """``PostgresRunStorage`` with one connection kept open per process."""


class KeptOpenPostgresScheduleStorage(KeptOpenConnectionMixin, PostgresScheduleStorage):
    """``PostgresScheduleStorage`` with one connection kept open per process."""


def _note_process(_dbapi_connection, record) -> None:
    record.info["pid"] = os.getpid()


def _not_from_a_parent_process(_dbapi_connection, record, proxy) -> None:
    """A connection opened before a fork belongs to the parent: the child opens its own
    (SQLAlchemy's recipe for pools across ``fork``)."""
    if record.info["pid"] != os.getpid():
        record.dbapi_connection = proxy.dbapi_connection = None  # not closed: the parent still uses it
        raise db.exc.DisconnectionError(f"connection opened by process {record.info['pid']}, not {os.getpid()}")

"""The production instance's event log: Dagster's PostgreSQL event log storage, with each
check planned over a run's N media IDs stored as one row of O(N) bytes, not N rows of O(N).

Dagster writes one PLANNED row per partition for each check a run plans, and each row holds the
whole planned event with every partition key of the run. At 500 IDs a run that is 17 rows of
about 7 kB per media ID; PostgreSQL compresses them to 54 kB per ID, more than half of what a
media ID costs the database (docs/BENCHMARKS.md, "Dagster records per media ID"), and inserting
them was a third of the daemon's time while it created a backfill's runs. This class stores one
row per check and run and reads it back per ID (``resources/check_plans.py``): it overrides
private methods of Dagster's storage, so it waits for the same upstream fix
(dagster-io/dagster#33231 introduced the per-partition rows).
It also lists dynamic partition keys once per change, not once per call
(``resources/partition_key_cache.py``, which adds a table of key counts and two triggers; without
the cache, Dagster fetches all 1,000,000 keys over the connection 30 times for each run it
creates). And it plans a run's materializations in one event per asset, read back per partition
(``PlannedSubsetsMixin`` in the SQLite adapter's module). And it keeps one connection open per
process, as Dagster's webserver does for itself (``optimize_for_webserver``, with the
webserver's default pool settings): dagster-postgres otherwise opens a new connection for every
query (``NullPool``), about 9 ms each on this project's machines, so the sensor's tick that
looks up 100 new media IDs spent 0.9 s connecting. It also remembers which tables and
asset-table columns exist once they do (``PresentSchemaMixin``, as the SQLite adapter: Dagster
asks the database again before every partition key lookup, 0.15 s to 0.08 s for those 100).
Same tables and schema otherwise: an instance can switch back to
``dagster_postgres.PostgresEventLogStorage`` (a run planned by this storage and still failed
then shows its IDs Missing, not Failed).

Used by ``deploy/dagster.yaml``. Dagster's Helm chart writes the event log storage class itself
(``PostgresEventLogStorage``, in its instance ConfigMap), so a Helm deployment keeps Dagster's
rows: docs/deploy.md says so.
"""

from typing import Any

import sqlalchemy as db
from dagster import DagsterEventType
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster_postgres import PostgresEventLogStorage

from resources import dagster_settings, partition_key_cache
from resources.check_plans import CheckPlansMixin
from resources.postgres_storages import KeptOpenConnectionMixin
from resources.sqlite_event_log import PlannedSubsetsMixin, PresentSchemaMixin


class CompactCheckPlansPostgresEventLogStorage(KeptOpenConnectionMixin, PresentSchemaMixin, CheckPlansMixin,
                                               PlannedSubsetsMixin, partition_key_cache.CachedKeysMixin,
                                               PostgresEventLogStorage):
    """``PostgresEventLogStorage`` whose checks are planned in one row per run (``CheckPlansMixin``), whose
    planned materializations are one event per asset (``PlannedSubsetsMixin``), whose dynamic
    partition keys are listed once per change (``resources/partition_key_cache.py``), and which
    keeps one connection open per process (``KeptOpenConnectionMixin``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        dagster_settings.apply_defaults()
        super().__init__(*args, **kwargs)
        self._partition_keys = partition_key_cache.shared(self.postgres_url)
        with self.index_transaction() as conn:
            partition_key_cache.install(conn, partition_key_cache.POSTGRES_INSTALL)

    def store_event_batch(self, events) -> None:
        """A new run's planned events (a materialization planned per asset, a check planned per
        check) in one transaction: their rows in one insert, the asset table's row of each asset,
        the planned checks' rows (``CheckPlansMixin``). dagster-postgres writes a batch of mixed
        types one by one, each event in a transaction or two of its own: two thirds of the
        daemon's time in creating a run, while it created a backfill's runs (py-spy). Any other
        batch is stored as dagster-postgres stores it."""
        types = {event.get_dagster_event().event_type for event in events if event.is_dagster_event}
        if not events or len({event.run_id for event in events}) != 1 or not types <= _PLANNED:
            super().store_event_batch(events)
            return
        rows = [self._event_to_row(event) for event in events]
        with self.index_transaction() as conn:
            inserted = conn.execute(SqlEventLogStorageTable.insert().returning(
                SqlEventLogStorageTable.c.id, sort_by_parameter_order=True), rows)
            event_ids = [row[0] for row in inserted]
            assets = [(e, i) for e, i in zip(events, event_ids, strict=True)
                      if e.get_dagster_event().event_type in _ASSET_EVENTS]
            self._store_asset_event_tags(conn, [e for e, _ in assets], [i for _, i in assets])
            for event, event_id in {e.get_dagster_event().asset_key: (e, i) for e, i in assets}.values():
                self._store_asset_event(conn, event, event_id)  # each asset's last, as one by one leaves it
            self.insert_check_plans(conn, [(e, i, row["event"]) for e, i, row in zip(events, event_ids, rows, strict=True)])

    def add_dynamic_partitions(self, partitions_def_name: str, partition_keys) -> None:
        """As dagster-postgres adds them (one insert, existing keys skipped), but with the keys
        as one array parameter of a fixed statement, where Dagster's builds a statement with
        every key in it: compiling that took 37 ms of each batch of 1,000 (``klio-register``),
        more than the insert."""
        if not partition_keys:
            return
        self._check_partitions_table()
        with self.index_connection() as conn:
            conn.execute(_ADD_KEYS, {"name": partitions_def_name, "keys": list(partition_keys)})


_ASSET_EVENTS = {DagsterEventType.ASSET_MATERIALIZATION_PLANNED}
_PLANNED = {DagsterEventType.ASSET_MATERIALIZATION_PLANNED, DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED}
_ADD_KEYS = db.text("INSERT INTO dynamic_partitions (partitions_def_name, partition) "
                    "SELECT :name, unnest(CAST(:keys AS text[])) ON CONFLICT DO NOTHING")

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
from dagster_postgres import PostgresEventLogStorage

from resources import dagster_settings, partition_key_cache
from resources.check_plans import CheckPlansMixin
from resources.postgres_storages import KeptOpenConnectionMixin
from resources.sqlite_event_log import PlannedSubsetsMixin, PresentSchemaMixin


class CompactCheckPlansPostgresEventLogStorage(KeptOpenConnectionMixin, PresentSchemaMixin, CheckPlansMixin,
                                               PlannedSubsetsMixin, PostgresEventLogStorage):
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

    def get_dynamic_partitions(self, partitions_def_name: str):
        return self._partition_keys.keys(self, partitions_def_name, super().get_dynamic_partitions)

    def has_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> bool:
        self._check_partitions_table()
        with self.index_connection() as conn:
            return partition_key_cache.has_key(conn, partitions_def_name, partition_key)

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


_ADD_KEYS = db.text("INSERT INTO dynamic_partitions (partitions_def_name, partition) "
                    "SELECT :name, unnest(CAST(:keys AS text[])) ON CONFLICT DO NOTHING")

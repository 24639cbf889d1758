"""Dynamic partition keys listed once per change, not once per call, for both event log storages.

Dagster lists every key of a dynamic partitions definition whenever it resolves a run's
partition range: once per asset and once per check each time it creates a run (30 listings
per run of this project's 13 assets), and again for pages of the UI. At 1,000,000 media IDs a
listing is 1.8 s on SQLite: a run took 4.8 s of the daemon's CPU to create. A cache per process
needs a cheap way to know that no process has added or deleted a key since; counting the keys
is O(N) (60 ms at 1,000,000, 30 times a run).

So the database keeps a version per partitions definition: ``klio_dynamic_partition_versions``,
bumped by triggers on Dagster's ``dynamic_partitions`` table, whoever writes it (any process,
any storage class). Reading it is one primary-key lookup. Its ``epoch`` is random per row, so a
database wiped and filled again never matches a list cached before. Installing is idempotent
and done by every process that opens the index database; existing keys get a row then.

A trigger costs each added key about 1.3 us on SQLite (per row; SQLite has no statement-level
triggers) and one statement per insert on PostgreSQL. A Dagster migration that rebuilt
``dynamic_partitions`` would drop the triggers; they come back when a process next opens the
database, and nothing adds keys during a migration.
"""

import threading
from collections.abc import Callable, Sequence

import sqlalchemy as db

VERSIONS = "klio_dynamic_partition_versions"

SQLITE_INSTALL = [
    f"CREATE TABLE IF NOT EXISTS {VERSIONS} (partitions_def_name TEXT PRIMARY KEY, epoch TEXT NOT NULL, "
    "version INTEGER NOT NULL)",
    *(f"""CREATE TRIGGER IF NOT EXISTS klio_dynamic_partition_{verb} AFTER {action} ON dynamic_partitions
        BEGIN
          INSERT INTO {VERSIONS} VALUES ({row}.partitions_def_name, hex(randomblob(8)), 1)
          ON CONFLICT (partitions_def_name) DO UPDATE SET version = version + 1;
        END""" for verb, action, row in (("added", "INSERT", "NEW"), ("deleted", "DELETE", "OLD"))),
    f"INSERT OR IGNORE INTO {VERSIONS} SELECT name, hex(randomblob(8)), 0 "
    "FROM (SELECT DISTINCT partitions_def_name AS name FROM dynamic_partitions)",
]

POSTGRES_INSTALL = [
    "SELECT pg_advisory_xact_lock(hashtext('klio_dynamic_partition_versions'))",  # one installer at a time
    f"CREATE TABLE IF NOT EXISTS {VERSIONS} (partitions_def_name TEXT PRIMARY KEY, epoch TEXT NOT NULL, "
    "version BIGINT NOT NULL)",
    f"""CREATE OR REPLACE FUNCTION klio_dynamic_partitions_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          INSERT INTO {VERSIONS} SELECT name, md5(random()::text), 1
          FROM (SELECT DISTINCT partitions_def_name AS name FROM changed) AS names
          ON CONFLICT (partitions_def_name) DO UPDATE SET version = {VERSIONS}.version + 1;
          RETURN NULL;
        END $$""",
    *(f"""CREATE OR REPLACE TRIGGER klio_dynamic_partitions_{verb} AFTER {action} ON dynamic_partitions
        REFERENCING {table} TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION klio_dynamic_partitions_changed()"""
      for verb, action, table in (("added", "INSERT", "NEW"), ("deleted", "DELETE", "OLD"))),
    f"INSERT INTO {VERSIONS} SELECT name, md5(random()::text), 0 "
    "FROM (SELECT DISTINCT partitions_def_name AS name FROM dynamic_partitions) AS names ON CONFLICT DO NOTHING",
]


def install(conn, statements: Sequence[str]) -> None:
    """Create the version table and its triggers on ``conn`` (in its transaction)."""
    for statement in statements:
        conn.execute(db.text(statement))


class FrozenKeys(list):
    """A list of keys that refuses changes: one cached list is handed to every caller, without a
    copy (15 ms at 1,000,000 keys, 30 times a run), and none may change it for the others."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("cached partition keys cannot be changed: copy them with list(...)")

    append = extend = insert = remove = pop = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse


class PartitionKeyCache:
    """Per process: partitions definition name -> (its version row, its keys)."""

    def __init__(self) -> None:
        self._keys: dict[str, tuple[tuple, FrozenKeys]] = {}
        self._lock = threading.Lock()

    def keys(self, storage, name: str, list_keys: Callable[[str], Sequence[str]]) -> Sequence[str]:
        """``list_keys(name)`` (Dagster's listing), cached while ``name``'s version is unchanged.
        The keys are read after the version: if keys arrive in between, the list is newer than
        its version, and the next call reads again."""
        with storage.index_connection() as conn:
            version = conn.execute(db.text(f"SELECT epoch, version FROM {VERSIONS} WHERE partitions_def_name = :name"),
                                   {"name": name}).one_or_none()
        if version is None:  # no key was ever added under this name
            return list_keys(name)
        with self._lock:
            cached = self._keys.get(name)
        if cached is None or cached[0] != tuple(version):
            cached = (tuple(version), FrozenKeys(list_keys(name)))
            with self._lock:
                self._keys[name] = cached
        return cached[1]

"""Dynamic partition keys listed once, then kept up to date by reading only the new ones, for
both event log storages.

Dagster lists every key of a dynamic partitions definition whenever it resolves a run's
partition range: once per asset and once per check each time it creates a run (30 listings
per run of this project's 13 assets), and again for pages of the UI. At 1,000,000 media IDs a
listing is 1.8 s on SQLite: a run took 4.8 s of the daemon's CPU to create. A cache per process
needs a cheap way to know what any process has added or deleted since; counting the keys is
O(N) (60 ms at 1,000,000, 30 times a run), and listing them all again after each sensor tick
that adds a few is what made a tick of 100 new IDs cost 1.8 s more than its work.

So the database keeps, per partitions definition, how many keys were ever added and deleted:
``klio_dynamic_partition_versions``, counted by triggers on Dagster's ``dynamic_partitions``
table, whoever writes it (any process, any storage class). Reading it is one primary-key lookup.
When only additions happened since the cached list, the cache reads the rows after its newest
(Dagster lists by row id) and appends them, if they are exactly as many as were added;
otherwise (a deletion, or a row committed out of id order on PostgreSQL) it lists again. Its
``epoch`` is random per row, so a database wiped and filled again never matches a list cached
before. Installing is idempotent and done by every process that opens the index database;
existing keys are counted then.

A trigger costs each added key about 1.3 us on SQLite (per row; SQLite has no statement-level
triggers) and one statement per insert on PostgreSQL. A Dagster migration that rebuilt
``dynamic_partitions`` would drop the triggers; they come back when a process next opens the
database, and nothing adds keys during a migration.
"""

import operator
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import SupportsIndex

import sqlalchemy as db

VERSIONS = "klio_dynamic_partition_versions"

SQLITE_INSTALL = [
    f"CREATE TABLE IF NOT EXISTS {VERSIONS} (partitions_def_name TEXT PRIMARY KEY, epoch TEXT NOT NULL, "
    "added INTEGER NOT NULL, deleted INTEGER NOT NULL)",
    *(f"""CREATE TRIGGER IF NOT EXISTS klio_dynamic_partition_{verb} AFTER {action} ON dynamic_partitions
        BEGIN
          INSERT INTO {VERSIONS} VALUES ({row}.partitions_def_name, hex(randomblob(8)), {counts})
          ON CONFLICT (partitions_def_name) DO UPDATE SET {verb} = {verb} + 1;
        END""" for verb, action, row, counts in (("added", "INSERT", "NEW", "1, 0"), ("deleted", "DELETE", "OLD", "0, 1"))),
    f"INSERT OR IGNORE INTO {VERSIONS} SELECT partitions_def_name, hex(randomblob(8)), COUNT(*), 0 "
    "FROM dynamic_partitions GROUP BY partitions_def_name",
]

POSTGRES_INSTALL = [
    "SELECT pg_advisory_xact_lock(hashtext('klio_dynamic_partition_versions'))",  # one installer at a time
    f"CREATE TABLE IF NOT EXISTS {VERSIONS} (partitions_def_name TEXT PRIMARY KEY, epoch TEXT NOT NULL, "
    "added BIGINT NOT NULL, deleted BIGINT NOT NULL)",
    *(f"""CREATE OR REPLACE FUNCTION klio_dynamic_partitions_{verb}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          INSERT INTO {VERSIONS} SELECT partitions_def_name, md5(random()::text), {counts}
          FROM changed GROUP BY partitions_def_name
          ON CONFLICT (partitions_def_name) DO UPDATE SET {verb} = {VERSIONS}.{verb} + EXCLUDED.{verb};
          RETURN NULL;
        END $$""" for verb, counts in (("added", "COUNT(*), 0"), ("deleted", "0, COUNT(*)"))),
    *(f"""CREATE OR REPLACE TRIGGER klio_dynamic_partitions_{verb} AFTER {action} ON dynamic_partitions
        REFERENCING {table} TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION klio_dynamic_partitions_{verb}()"""
      for verb, action, table in (("added", "INSERT", "NEW"), ("deleted", "DELETE", "OLD"))),
    f"INSERT INTO {VERSIONS} SELECT partitions_def_name, md5(random()::text), COUNT(*), 0 "
    "FROM dynamic_partitions GROUP BY partitions_def_name ON CONFLICT DO NOTHING",
]


def install(conn, statements: Sequence[str]) -> None:
    """Create the table of key counts and its triggers on ``conn`` (in its transaction)."""
    for statement in statements:
        conn.execute(db.text(statement))


class FrozenKeys(list):
    """A list of keys that refuses changes: one cached list is handed to every caller, without a
    copy (15 ms at 1,000,000 keys, 30 times a run), and none may change it for the others."""

    REMEMBERED = 4096  # positions found, kept until there are this many

    def __init__(self, keys: Iterable[str] = ()) -> None:
        super().__init__(keys)
        self._found: dict[str, int] = {}

    @property
    def remembered(self) -> int:
        """How many positions are remembered now (at most ``REMEMBERED``)."""
        return len(self._found)

    def _refuse(self, *args, **kwargs):
        raise TypeError("cached partition keys cannot be changed: copy them with list(...)")

    append = extend = insert = remove = pop = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse

    def index(self, key, start: SupportsIndex = 0, stop: SupportsIndex = sys.maxsize) -> int:
        """The position of ``key``, remembered once found.

        Dagster finds a run's partition range by ``keys.index(start)`` and ``keys.index(end)``
        over the whole list, about 30 times for the same range per run it creates. A range
        in the middle of 100,000 keys cost a tenth of the daemon's CPU while it created a
        100,000-ID backfill's runs (py-spy), so a position found is remembered (the list
        never changes)."""
        if (operator.index(start), operator.index(stop)) != (0, sys.maxsize):
            return super().index(key, start, stop)
        position = self._found.get(key)
        if position is None:
            position = self._search_from_both_ends(key)
            if len(self._found) >= self.REMEMBERED:
                self._found.clear()
            self._found[key] = position
        return position

    def _search_from_both_ends(self, key) -> int:
        """Searched from both ends at once in windows that double: from the front, new content
        (at the end of 1,000,000 keys) cost a full scan each time (py-spy: 1 s of the daemon's
        CPU per run). Keys of a partitions definition are unique, so the first match from either
        end is the only one; the cost is that of the nearer end, with no extra memory."""
        size, window = len(self), 1024
        front, back = 0, size
        while front < back:
            for low, high in ((front, min(front + window, back)), (max(back - window, front), back)):
                try:
                    return super().index(key, low, high)
                except ValueError:
                    pass
            front, back = min(front + window, back), max(back - window, front)
            window *= 2
        raise ValueError(f"{key!r} is not in the partition keys")


@dataclass(frozen=True)
class _Cached:
    epoch: str
    added: int
    deleted: int
    newest_id: int  # the row id of the newest key in ``keys``
    keys: FrozenKeys


class PartitionKeyCache:
    """For one database (``shared``): partitions definition name -> its keys, as of its counts."""

    def __init__(self) -> None:
        self._cached: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    def keys(self, storage, name: str, list_keys: Callable[[str], Sequence[str]]) -> Sequence[str]:
        """The keys of ``name`` in row id order, as Dagster lists them, kept up to date; ``list_keys``
        is Dagster's listing, for a name no key was ever added under (its table may not exist yet)."""
        with storage.index_connection() as conn:
            counts = conn.execute(db.text(f"SELECT epoch, added, deleted FROM {VERSIONS} "
                                          "WHERE partitions_def_name = :name"), {"name": name}).one_or_none()
            fresh = None if counts is None else self._read_additions(conn, name, *counts)
            if counts is not None and fresh is None:
                # Counts first, then the keys with their row ids (Dagster's listing, read faster): a
                # key added in between is listed but not counted, so the next call, counting it,
                # finds no row after the newest listed and lists again.
                rows = rows_after(conn, name, 0)
                epoch, added, deleted = counts
                fresh = _Cached(epoch, added, deleted, rows[-1][0] if rows else 0, FrozenKeys(row[1] for row in rows))
        if fresh is None:  # no key was ever added under this name (its table may not exist yet)
            return list_keys(name)
        with self._lock:
            self._cached[name] = fresh
        return fresh.keys

    def _read_additions(self, conn, name: str, epoch: str, added: int, deleted: int) -> _Cached | None:
        """The cached keys as of these counts: as they are, or with the rows added since appended;
        None when they must be listed again (none cached, a deletion, a row out of id order)."""
        with self._lock:
            cached = self._cached.get(name)
        if cached is None or (cached.epoch, cached.deleted) != (epoch, deleted):
            return None
        if cached.added == added:
            return cached
        rows = rows_after(conn, name, cached.newest_id)
        if len(rows) != added - cached.added:  # a row committed out of id order (PostgreSQL), or not yet visible
            return None
        return _Cached(epoch, added, deleted, rows[-1][0] if rows else cached.newest_id,
                       FrozenKeys([*cached.keys, *(row[1] for row in rows)]))


class CachedKeysMixin:
    """For a SQL event log storage that sets ``_partition_keys`` (its database's ``shared`` cache):
    keys listed from the cache, and a key looked up by the driver (``has_key``)."""

    _partition_keys: "PartitionKeyCache"

    def get_dynamic_partitions(self, partitions_def_name: str):
        return self._partition_keys.keys(self, partitions_def_name, super().get_dynamic_partitions)  # type: ignore[misc]

    def has_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> bool:
        self._check_partitions_table()  # type: ignore[attr-defined]
        with self.index_connection() as conn:  # type: ignore[attr-defined]
            return has_key(conn, partitions_def_name, partition_key)


def has_key(conn, name: str, key: str) -> bool:
    """Whether ``key`` is a key of ``name``: Dagster's query, run with the database driver's own
    cursor. SQLAlchemy built and compiled Dagster's statement for each call: the daemon asks twice
    per asset for each run it creates (a tenth of its samples while it created a backfill's runs)."""
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"  # SQLite; psycopg2
    cursor = conn.connection.cursor()
    try:
        cursor.execute("SELECT 1 FROM dynamic_partitions WHERE partitions_def_name = "
                       f"{marker} AND partition = {marker} LIMIT 1", (name, key))
        return cursor.fetchone() is not None
    finally:
        cursor.close()


def rows_after(conn, name: str, newest_id: int) -> list[tuple[int, str]]:
    """(id, key) of the keys of ``name`` after row ``newest_id``, in id order (Dagster lists them
    so), read with the database driver's own cursor: SQLAlchemy's rows cost 2.3 s of CPU for
    900,000 keys (the first tick after a bulk registration reads that many in each process), the
    driver's tuples 0.7 s."""
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"  # SQLite; psycopg2
    cursor = conn.connection.cursor()
    try:
        cursor.execute("SELECT id, partition FROM dynamic_partitions WHERE partitions_def_name = "
                       f"{marker} AND id > {marker} ORDER BY id", (name, newest_id))
        return cursor.fetchall()
    finally:
        cursor.close()


_SHARED: dict[str, PartitionKeyCache] = {}
_SHARED_LOCK = threading.Lock()


def shared(database: str) -> PartitionKeyCache:
    """This process's cache for ``database`` (a path or URL that names it), shared by every storage
    object on it. A cache per storage object was cold on every sensor tick in the daemon (py-spy:
    one full listing per tick's run at 1,000,000 IDs), where the storage objects do not live as
    long as the process. Sharing is safe: each answer is checked against the database's counts."""
    with _SHARED_LOCK:
        return _SHARED.setdefault(database, PartitionKeyCache())


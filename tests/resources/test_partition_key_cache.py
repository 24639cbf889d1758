"""Both event log storages list dynamic partition keys once, then read only what was added: a
second instance (as another process) adds and deletes keys, and the cached instance sees each
change at once, lists them all again only after a deletion, and never disagrees with Dagster's
own listing."""

import dagster as dg
import pytest

from resources import partition_key_cache


def dagster_class(instance) -> type:
    """Dagster's storage class that the project's event log storage extends."""
    return next(c for c in type(instance.event_log_storage).__mro__ if c.__module__.startswith("dagster"))


def dagster_listing(instance, name: str) -> list[str]:
    """Dagster's own listing, past the cache."""
    return list(dagster_class(instance).get_dynamic_partitions(instance.event_log_storage, name))


def spy_on_listings(monkeypatch) -> list[str]:
    """The names the cache lists in full (every row, not only those after its newest), from now on."""
    listings: list[str] = []
    read = partition_key_cache.rows_after

    def spy(conn, name: str, newest_id: int):
        if newest_id == 0:
            listings.append(name)
        return read(conn, name, newest_id)

    monkeypatch.setattr(partition_key_cache, "rows_after", spy)
    return listings


def test_partition_keys_are_listed_once_then_read_as_they_are_added(home, monkeypatch):
    with dg.DagsterInstance.get() as cached, dg.DagsterInstance.get() as other:
        assert type(cached.event_log_storage).__module__.startswith("resources."), type(cached.event_log_storage)
        other.add_dynamic_partitions("ids", ["a", "b", "c"])
        listings = spy_on_listings(monkeypatch)
        assert cached.get_dynamic_partitions("ids") == ["a", "b", "c"]
        assert cached.get_dynamic_partitions("ids") == ["a", "b", "c"]
        with dg.DagsterInstance.get() as new:  # a new instance in the process (as the daemon makes)
            assert new.get_dynamic_partitions("ids") == ["a", "b", "c"]
        assert listings == ["ids"]  # unchanged: served from the cache, which the process shares
        other.add_dynamic_partitions("ids", ["d"])
        other.add_dynamic_partitions("ids", ["e", "f"])
        assert cached.get_dynamic_partitions("ids") == ["a", "b", "c", "d", "e", "f"] == dagster_listing(other, "ids")
        assert listings == ["ids"]  # the cache read only the new rows
        other.delete_dynamic_partition("ids", "b")
        assert cached.get_dynamic_partitions("ids") == ["a", "c", "d", "e", "f"]
        # the newest key deleted and another added: the database may give the new row the same id
        other.delete_dynamic_partition("ids", "f")
        other.add_dynamic_partitions("ids", ["g"])
        assert cached.get_dynamic_partitions("ids") == ["a", "c", "d", "e", "g"]
        other.add_dynamic_partitions("more", ["x"])  # another definition's change leaves this list cached
        assert cached.get_dynamic_partitions("ids") == ["a", "c", "d", "e", "g"]
        assert cached.get_dynamic_partitions("none") == []  # never added to: Dagster's listing
        assert listings == ["ids", "ids", "ids"]


def test_a_key_committed_out_of_row_order_makes_it_list_again(home, monkeypatch):
    """On PostgreSQL a transaction can commit a row with a lower id after the cache has read a
    higher one; here the row is written with a lower id by hand. Its count gives it away."""
    with dg.DagsterInstance.get() as cached, dg.DagsterInstance.get() as other:
        other.add_dynamic_partitions("ids", ["a"])
        assert cached.get_dynamic_partitions("ids") == ["a"]
        with other.event_log_storage.index_connection() as conn:
            [newest] = conn.exec_driver_sql("SELECT MAX(id) FROM dynamic_partitions").one()

        def insert(row_id: int, key: str) -> None:
            with other.event_log_storage.index_connection() as conn:
                conn.exec_driver_sql("INSERT INTO dynamic_partitions (id, partitions_def_name, partition) "
                                     f"VALUES ({row_id}, 'ids', '{key}')")

        insert(newest + 10, "late-high")
        assert cached.get_dynamic_partitions("ids") == ["a", "late-high"]
        insert(newest + 5, "late-low")
        listings = spy_on_listings(monkeypatch)
        assert cached.get_dynamic_partitions("ids") == ["a", "late-low", "late-high"] == dagster_listing(other, "ids")
        assert listings == ["ids"]  # listed again


def test_the_one_cached_list_cannot_be_changed_by_a_caller(home):
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("ids", ["a", "b"])
        keys = instance.get_dynamic_partitions("ids")
        with pytest.raises(TypeError, match="cannot be changed"):
            keys.append("c")
        assert keys + ["c"] == ["a", "b", "c"]  # a copy is an ordinary list
        assert instance.get_dynamic_partitions("ids") == ["a", "b"]


def test_keys_registered_before_the_cache_existed_are_counted_when_it_starts(home):
    """A home written by Dagster's own storage (no count table, no triggers) and then opened
    with this project's."""
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("ids", ["a"])
        with instance.event_log_storage.index_connection() as conn:
            for statement in ("DROP TRIGGER klio_dynamic_partition_added", "DROP TABLE klio_dynamic_partition_versions") \
                    if "sqlite" in type(instance.event_log_storage).__name__.lower() else \
                    ("DROP TRIGGER klio_dynamic_partitions_added ON dynamic_partitions",
                     "DROP TABLE klio_dynamic_partition_versions"):
                conn.exec_driver_sql(statement)
        instance.add_dynamic_partitions("ids", ["b"])  # not counted: nothing listens
    with dg.DagsterInstance.get() as reopened:
        assert reopened.get_dynamic_partitions("ids") == ["a", "b"]
        with dg.DagsterInstance.get() as other:
            other.add_dynamic_partitions("ids", ["c"])
        assert reopened.get_dynamic_partitions("ids") == ["a", "b", "c"]


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 5000, 70_001])
def test_the_cached_keys_find_a_key_where_a_list_does_from_either_end(size):
    from resources.partition_key_cache import FrozenKeys

    keys = [f"k{i}" for i in range(size)]
    frozen = FrozenKeys(keys)
    for position in {0, 1, size // 3, size // 2, size - 1025, size - 1024, size - 2, size - 1} & set(range(size)):
        for _ in range(2):  # searched, then remembered
            assert frozen.index(keys[position]) == position
        assert frozen.index(keys[position], position) == keys.index(keys[position], position)
    for _ in range(2):  # a key not found is not remembered
        with pytest.raises(ValueError):
            frozen.index("missing")
    if size > 2:  # with bounds, as a list: not found outside them
        with pytest.raises(ValueError):
            frozen.index(keys[0], 1)


def test_the_cached_keys_remember_a_bounded_number_of_positions():
    from resources.partition_key_cache import FrozenKeys

    keys = [f"k{i}" for i in range(3 * FrozenKeys.REMEMBERED)]
    frozen = FrozenKeys(keys)
    assert [frozen.index(key) for key in keys] == list(range(len(keys)))
    assert 0 < frozen.remembered <= FrozenKeys.REMEMBERED


def test_dagster_finds_a_range_at_the_end_of_the_cached_keys(home):
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("ids", [f"k{i:05d}" for i in range(20_000)])
        partitions = dg.DynamicPartitionsDefinition(name="ids")
        with dg.partition_loading_context(dynamic_partitions_store=instance):
            assert partitions.get_partition_keys_in_range(dg.PartitionKeyRange("k19990", "k19999")) == [
                f"k{i:05d}" for i in range(19_990, 20_000)]


def test_a_key_is_looked_up_as_dagster_looks_it_up(home):
    """``has_dynamic_partition``, by the driver's cursor: the same answers as Dagster's query, on
    both storages, for keys added, deleted, of another definition, and with LIKE's wildcards."""
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("ids", ["a", "b_%", "c"])
        instance.add_dynamic_partitions("other", ["d"])
        instance.delete_dynamic_partition("ids", "c")
        storage = instance.event_log_storage
        parent = next(c for c in type(storage).__mro__ if c.__module__.startswith(("dagster.", "dagster_postgres")))
        for name, key in [("ids", "a"), ("ids", "b_%"), ("ids", "bx%"), ("ids", "c"), ("ids", "d"), ("other", "d"),
                          ("none", "a")]:
            assert storage.has_dynamic_partition(name, key) == parent.has_dynamic_partition(storage, name, key), (name, key)
        assert [storage.has_dynamic_partition("ids", k) for k in ("a", "b_%", "bx%", "c")] == [True, True, False, False]

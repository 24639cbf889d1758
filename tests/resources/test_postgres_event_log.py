"""The production storages keep one PostgreSQL connection open per process each (dagster-postgres
opens one per query), a forked child never uses its parent's, and keys are added as Dagster
adds them."""

import multiprocessing

import dagster as dg
import pytest
import sqlalchemy as db

pytestmark = pytest.mark.slow


@pytest.fixture
def instance(home):
    with dg.DagsterInstance.get() as instance:
        if type(instance.event_log_storage).__name__ != "CompactCheckPlansPostgresEventLogStorage":
            pytest.skip("the PostgreSQL storages only")
        yield instance


@pytest.fixture
def storage(instance):
    return instance.event_log_storage


def backend_pid(storage) -> int:
    connect = storage.index_connection if hasattr(storage, "index_connection") else storage.connect
    with connect() as conn:
        return conn.execute(db.text("SELECT pg_backend_pid()")).scalar()


@pytest.mark.parametrize("kind", ["event_log_storage", "run_storage", "schedule_storage"])
def test_queries_share_one_connection(instance, kind):
    storage = getattr(instance, kind)
    first = backend_pid(storage)
    instance.has_dynamic_partition("media_ids", "x")
    instance.get_run_by_id("no-such-run")
    instance.get_instigator_state("no-such-origin", "no-such-selector")
    assert backend_pid(storage) == first


@pytest.mark.parametrize("kind", ["event_log_storage", "run_storage", "schedule_storage"])
def test_a_forked_child_opens_its_own_connection(instance, kind):
    storage = getattr(instance, kind)
    parent = backend_pid(storage)
    fork = multiprocessing.get_context("fork")
    answer = fork.SimpleQueue()
    child = fork.Process(target=lambda: answer.put(backend_pid(storage)))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    in_child = answer.get()
    assert in_child != parent
    assert backend_pid(storage) == parent  # the parent's connection still works


def test_adding_keys_skips_known_ones_and_keeps_their_order(storage):
    storage.add_dynamic_partitions("media_ids", ["b", "a"])
    storage.add_dynamic_partitions("media_ids", ["c", "a", "d", "c"])  # one known, one twice
    storage.add_dynamic_partitions("media_ids", [])
    storage.add_dynamic_partitions("other", ["a"])
    assert list(storage.get_dynamic_partitions("media_ids")) == ["b", "a", "c", "d"]
    assert list(storage.get_dynamic_partitions("other")) == ["a"]


def test_a_present_table_is_asked_once_an_absent_one_every_time(storage):
    statements: list[str] = []

    def note(_conn, _cursor, statement, *_):
        statements.append(statement)

    def queries(call) -> tuple[bool, int]:
        before = len(statements)
        return call(), len(statements) - before

    db.event.listen(db.engine.Engine, "before_cursor_execute", note)
    try:
        assert queries(lambda: storage.has_table("event_logs"))[0]
        assert queries(lambda: storage.has_table("event_logs")) == (True, 0)
        assert queries(lambda: storage.has_table("klio_later")) == (False, 1)
        with storage.index_connection() as conn:
            conn.execute(db.text("CREATE TABLE klio_later (x int)"))
        assert queries(lambda: storage.has_table("klio_later")) == (True, 1)
        assert queries(lambda: storage.has_table("klio_later")) == (True, 0)
    finally:
        db.event.remove(db.engine.Engine, "before_cursor_execute", note)

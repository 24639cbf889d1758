"""The production storages keep one PostgreSQL connection open per process each (dagster-postgres
opens one per query), a forked child never uses its parent's, and keys are added as Dagster
adds them."""

import multiprocessing

import dagster as dg
import pytest
import sqlalchemy as db

from resources.dagster_tags import RANGE_END_TAG, RANGE_START_TAG
from tests.resources.test_check_plans import IDS, z_with_checks

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


def test_a_runs_planned_events_in_one_transaction_leave_what_one_by_one_leaves(instance, storage):
    """A new run's planned events, stored as one batch, leave the same rows as stored one by one
    (dagster-postgres' way): events, each asset's row of the asset table, the checks' rows."""
    instance.add_dynamic_partitions("ids", IDS)
    run = dg.materialize([z_with_checks], instance=instance, raise_on_error=False,
                         tags={RANGE_START_TAG: IDS[0], RANGE_END_TAG: IDS[19]})
    planned = [e for e in instance.all_logs(run.run_id) if e.dagster_event_type in (
        dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED, dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED)]
    assert len(planned) == 2

    def as_run(run_id: str) -> list[dg.EventLogEntry]:
        return [dg.EventLogEntry(error_info=e.error_info, level=e.level, user_message=e.user_message, run_id=run_id,
                                 timestamp=e.timestamp, step_key=e.step_key, job_name=e.job_name,
                                 dagster_event=e.dagster_event) for e in planned]

    def left_by(run_id: str) -> tuple:
        with storage.index_connection() as conn:
            events = conn.execute(db.text(
                "SELECT dagster_event_type, asset_key, partition, step_key, timestamp FROM event_logs "
                "WHERE run_id = :run ORDER BY id"), {"run": run_id}).all()
            assets = conn.execute(db.text(
                "SELECT asset_key, last_materialization_timestamp FROM asset_keys WHERE last_run_id = :run "
                "ORDER BY asset_key"), {"run": run_id}).all()
            checks = conn.execute(db.text(
                "SELECT asset_key, check_name, partition, execution_status, evaluation_event, evaluation_event_timestamp "
                "FROM asset_check_executions WHERE run_id = :run ORDER BY id"), {"run": run_id}).all()
        return events, assets, [c[:4] + (c[4].replace(run_id, "RUN"),) + c[5:] for c in checks]

    for event in as_run("one-by-one"):
        storage.store_event(event)
    one_by_one = left_by("one-by-one")
    storage.store_event_batch(as_run("batched"))
    assert left_by("batched") == one_by_one
    assert len(one_by_one[0]) == 2 and len(one_by_one[1]) == 1 and len(one_by_one[2]) == 1

"""A check planned over a run's media IDs, stored as one row and read back per ID, for both event
log storages.

When Dagster creates a run over N partitions, it plans each of the run's checks and writes a
PLANNED row per check and partition into ``asset_check_executions``; the evaluation that comes
later turns that row into SUCCEEDED or FAILED. A media run of 500 IDs plans 17 checks: 8,500
rows, the largest share of the daemon's time while it created a 100,000-ID backfill's runs
(py-spy: 22.6% of its samples on SQLite, mostly committing those rows; 33.6% of its waiting on
PostgreSQL; docs/BENCHMARKS.md). And under this project's record policy (an evaluation per ID
only when the check fails) almost all of them stay PLANNED for good.

``CheckPlansMixin`` writes one row per check and run instead, holding the planned event with
its partition subset, under a partition value no media ID can have (``RUN_PLAN``: IDs may not
contain "...", Dagster's range syntax, ``klio_core.media_ids``), so that none of Dagster's own
queries takes it for a partition. A
planned event of one partition (the sensor's single IDs) or of none is stored as Dagster does.
The three readers of a check's state per partition answer as if each ID had its PLANNED row:

- ``get_asset_check_execution_history`` for one ID: its own rows and the run plans that hold
  it, newest first (a plan is left out for a run that stored an evaluation of that ID, as
  Dagster's row would have become that evaluation); for every partition, a run's plan is one
  record without a partition: what the run planned, not one record per ID;
- ``get_latest_asset_check_execution_by_key`` for one ID: the newer of its own latest row and
  the latest plan that holds it;
- ``get_asset_check_partition_info`` (the check's status per partition): per ID, the newer of
  its own latest row and the latest plan that holds it, by their events' storage IDs.

A plan is found for one ID by a text prefilter on the stored event (the key as JSON writes it),
each match read back. Two things differ from Dagster's rows. A failed ID's evaluation is a new
row (Dagster's storage inserts one when it finds no PLANNED row for it), so among runs over the
same ID at the same time, history orders it by when it was stored, not when it was planned.
And retention (``trim_run_events``) keeps a run's plan rows while it keeps the run, where it
deletes Dagster's superseded PLANNED rows one by one: one row per check and run.

On Dagster's private API (its check table and records); tests/resources/test_check_plans.py
compares every answer with Dagster's own storage over the same runs. Upstream: the PLANNED
rows per partition came with dagster-io/dagster PR #33231; the planned events are written
synchronously at run creation (#33831).
"""

import json
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import sqlalchemy as db
from dagster import AssetCheckKey, DagsterEventType
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationPlanned
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecord,
    AssetCheckExecutionRecordStatus,
    AssetCheckPartitionInfo,
)
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._time import utc_datetime_from_naive
from dagster_shared.record import replace as record_replace
from dagster_shared.serdes import deserialize_value, serialize_value

# The partition of a run plan's row: no media ID contains "..." (Dagster's partition range syntax).
RUN_PLAN = "...run plan"
PLANNED = AssetCheckExecutionRecordStatus.PLANNED
TABLE = AssetCheckExecutionsTable


class CheckPlansMixin:
    """For a SQL event log storage: a check planned over several partitions is one row per run,
    read back per partition (see the module)."""

    def _store_asset_check_evaluation_planned(self, event: EventLogEntry, event_id: int | None) -> None:
        row = self.check_plan_row(event, event_id)
        if row is not None:
            with self.index_connection() as conn:  # type: ignore[attr-defined]
                conn.execute(TABLE.insert(), [row])

    def insert_check_plans(self, conn, stored: Sequence[tuple[EventLogEntry, int, str]]) -> None:
        """Insert on ``conn`` the rows of the checks that a batch's events plan, each event given
        with its storage ID and its serialised form (events of other types are passed over)."""
        rows = [self.check_plan_row(event, event_id, serialized) for event, event_id, serialized in stored
                if event.get_dagster_event().event_type == DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED]
        if any(rows):
            conn.execute(TABLE.insert(), [row for row in rows if row is not None])

    def check_plan_row(self, event: EventLogEntry, event_id: int | None, serialized: str | None = None
                       ) -> dict[str, Any] | None:
        """The row of ``asset_check_executions`` for the check that ``event`` plans (stored as
        ``event_id``; ``serialized``: the event's serialised form, when at hand), or None for a
        plan over no partition."""
        dagster_event = event.get_dagster_event()
        planned = cast(AssetCheckEvaluationPlanned, dagster_event.event_specific_data)
        keys = None if planned.partitions_subset is None else list(planned.partitions_subset.get_partition_keys())
        if keys == []:
            return None
        partition: str | None
        if keys and len(keys) == 1:  # as Dagster's row, but without a copy of the subset
            partition, stored = keys[0], serialize_value(event._replace(dagster_event=dagster_event._replace(
                event_specific_data=record_replace(planned, partitions_subset=None))))
        else:
            partition, stored = (RUN_PLAN if keys else None), serialized or serialize_value(event)
        return dict(asset_key=planned.asset_key.to_string(), check_name=planned.check_name, partition=partition,
                    run_id=event.run_id, execution_status=PLANNED.value, evaluation_event=stored,
                    evaluation_event_timestamp=self._event_insert_timestamp(event),  # type: ignore[attr-defined]
                    evaluation_event_storage_id=event_id)

    def get_asset_check_execution_history(self, check_key: AssetCheckKey, limit: int, cursor: int | None = None,
                                          status=None, partition_filter: PartitionKeyFilter | None = None
                                          ) -> Sequence[AssetCheckExecutionRecord]:
        records = super().get_asset_check_execution_history(  # type: ignore[misc]
            check_key, limit, cursor=cursor, status=status, partition_filter=partition_filter)
        partition = None if partition_filter is None else partition_filter.key
        if partition_filter is None:
            return [_without_plan_partition(r) for r in records]
        if partition is None or (status is not None and PLANNED not in status):
            return records
        own_runs = self._runs_with_own_rows(check_key, partition)
        plans = []
        for plan in self._plans_holding(check_key, partition, below=cursor):
            if plan.run_id not in own_runs:
                plans.append(plan)
                if len(plans) == limit:
                    break
        return sorted([*records, *plans], key=lambda r: r.id, reverse=True)[:limit]

    def get_latest_asset_check_execution_by_key(
            self, check_keys: Sequence[AssetCheckKey], partition_filter: PartitionKeyFilter | None = None
    ) -> Mapping[AssetCheckKey, AssetCheckExecutionRecord]:
        latest = dict(super().get_latest_asset_check_execution_by_key(  # type: ignore[misc]
            check_keys, partition_filter=partition_filter))
        if partition_filter is None:
            return {key: _without_plan_partition(record) for key, record in latest.items()}
        if partition_filter.key is None:
            return latest
        for key in check_keys:
            own = latest.get(key)
            plan = next(self._plans_holding(key, partition_filter.key, above=own.id if own else None), None)
            if plan is not None:
                latest[key] = plan
        return latest

    def get_asset_check_partition_info(self, keys: Sequence[AssetCheckKey], after_storage_id: int | None = None,
                                       partition_keys: Sequence[str] | None = None) -> Sequence[AssetCheckPartitionInfo]:
        own: dict[AssetCheckKey, dict[str, AssetCheckPartitionInfo]] = defaultdict(dict)
        for info in super().get_asset_check_partition_info(keys, None, partition_keys):  # type: ignore[misc]
            if info.partition_key != RUN_PLAN:
                own[info.check_key][info.partition_key] = info
        wanted = None if partition_keys is None else set(partition_keys)
        infos: list[AssetCheckPartitionInfo] = []
        for key in keys:
            latest = own[key]
            planned: dict[str, tuple[int, str]] = {}
            for storage_id, run_id, planned_keys in self._plans(key):  # oldest first: the latest wins
                planned.update(dict.fromkeys(planned_keys if wanted is None else wanted.intersection(planned_keys),
                                             (storage_id, run_id)))
            newer = {k: v for k, v in planned.items()
                     if k not in latest or latest[k].latest_check_event_storage_id < v[0]}
            made = self._latest_materialization_ids(key.asset_key, list(newer)) if newer else {}  # type: ignore[attr-defined]
            for partition, (storage_id, run_id) in newer.items():
                latest[partition] = AssetCheckPartitionInfo(
                    check_key=key, partition_key=partition, latest_execution_status=PLANNED,
                    latest_planned_run_id=run_id, latest_check_event_storage_id=storage_id,
                    latest_materialization_storage_id=made.get(partition),
                    latest_target_materialization_storage_id=None)
            infos.extend(info for info in latest.values() if after_storage_id is None
                         or info.latest_check_event_storage_id > after_storage_id
                         or (info.latest_materialization_storage_id or 0) > after_storage_id)
        return infos

    def _plans(self, check_key: AssetCheckKey) -> Iterator[tuple[int, str, Sequence[str]]]:
        """(storage ID of the planned event, run ID, partition keys) of the check's run plans, oldest first."""
        query = db.select(TABLE.c.evaluation_event_storage_id, TABLE.c.run_id, TABLE.c.evaluation_event).where(
            *_plan_rows_of(check_key)).order_by(TABLE.c.id.asc())
        with self.index_connection() as conn:  # type: ignore[attr-defined]
            rows = conn.execute(query).all()
        for storage_id, run_id, body in rows:
            yield storage_id, run_id, _planned_keys(deserialize_value(body, EventLogEntry))

    def _plans_holding(self, check_key: AssetCheckKey, partition: str, below: int | None = None,
                       above: int | None = None) -> Iterator[AssetCheckExecutionRecord]:
        """The check's run plans that hold ``partition``, newest first, as records of that
        partition; only those of row IDs below ``below`` and above ``above``."""
        query = db.select(TABLE.c.id, TABLE.c.run_id, TABLE.c.evaluation_event, TABLE.c.create_timestamp).where(
            *_plan_rows_of(check_key), TABLE.c.evaluation_event.like(key_pattern(partition), escape="\\"))
        if below:
            query = query.where(TABLE.c.id < below)
        if above is not None:
            query = query.where(TABLE.c.id > above)
        with self.index_connection() as conn:  # type: ignore[attr-defined]
            rows = conn.execute(query.order_by(TABLE.c.id.desc())).all()
        for row_id, run_id, body, created in rows:
            event = deserialize_value(body, EventLogEntry)
            if partition in _planned_keys(event):
                yield AssetCheckExecutionRecord(
                    key=check_key, id=row_id, run_id=run_id, status=PLANNED, event=event,
                    create_timestamp=utc_datetime_from_naive(created).timestamp(), partition=partition)

    def _runs_with_own_rows(self, check_key: AssetCheckKey, partition: str) -> set[str]:
        """The runs that stored a row of their own for ``partition`` (an evaluation of it)."""
        query = db.select(TABLE.c.run_id).where(TABLE.c.asset_key == check_key.asset_key.to_string(),
                                                TABLE.c.check_name == check_key.name, TABLE.c.partition == partition)
        with self.index_connection() as conn:  # type: ignore[attr-defined]
            return {run_id for (run_id,) in conn.execute(query)}


def key_pattern(partition: str) -> str:
    """A LIKE pattern (escape character ``\\``) that a serialised event holding ``partition`` in a
    partition subset matches: the key as JSON writes it, LIKE's wildcards escaped. A prefilter:
    each match is read back."""
    escaped = json.dumps(partition)[1:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _plan_rows_of(check_key: AssetCheckKey) -> tuple[Any, ...]:
    return (TABLE.c.asset_key == check_key.asset_key.to_string(), TABLE.c.check_name == check_key.name,
            TABLE.c.partition == RUN_PLAN)


def _planned_keys(event: EventLogEntry) -> Sequence[str]:
    planned = cast(AssetCheckEvaluationPlanned, event.get_dagster_event().event_specific_data)
    assert planned.partitions_subset is not None  # a run plan's row holds it
    return list(planned.partitions_subset.get_partition_keys())


def _without_plan_partition(record: AssetCheckExecutionRecord) -> AssetCheckExecutionRecord:
    """A run plan's row as one record of no partition (what the run planned); others as they are."""
    return record._replace(partition=None) if record.partition == RUN_PLAN else record

"""Bounded history: what a Dagster instance keeps of runs that finished more than a set age ago.

Dagster keeps every run and every event for ever (dagster-io/dagster#33785 asks for retention;
``retention:`` in dagster.yaml covers only schedule and sensor ticks). Deleting old runs outright,
with ``DagsterInstance.delete_run``, would also delete the latest materialization of every
partition they made: at 1,000,000 media IDs most partitions are materialized once, by a run that
is soon old, and would show as missing again. So ``prune_history`` keeps, of each old finished
run, exactly what Dagster's statuses and lineage read:

- the latest materialization and observation of each asset and partition, with its tags;
- a planned (or failed) attempt with no materialization after it: Dagster shows Failed from it
  and the run's status, so the run record stays too (a run over partitions plans each asset in
  one event holding its partitions, ``PlannedSubsetsMixin``: kept if the run failed);
- the check rows that are still the latest of their check and partition, and their events, and
  a run's plans of a check over its IDs (one row per check, ``resources/check_plans.py``);
- the run's status changes.

It deletes the rest: step and log events, planned events that a materialization followed,
superseded materializations and check rows. A run that keeps nothing is deleted whole (its events
first, then the record, so an interrupted pass leaves a run that the next one finds). On
SQLite, a run's own database (its run page's log) is trimmed to the same events and VACUUMed, or
removed with the run. A pass is idempotent. The deletions are SQL on Dagster's tables
(``resources/sqlite_event_log.py``, on private API): Dagster has no
API to delete single events.

``jobs/retention.py`` runs it daily (``KLIO_RETENTION_DAYS``); docs/architecture.md, "Retention".
"""

import dataclasses
import datetime

import dagster as dg

from resources import sqlite_event_log
from resources.dagster_tags import PARTITION_TAG, RANGE_START_TAG

FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


@dataclasses.dataclass
class Pruned:
    """What a pass deleted. ``events_deleted`` counts the index's rows (on PostgreSQL, all of a
    run's events; on SQLite, a run's own database holds the rest of its log)."""

    runs_deleted: int = 0
    runs_trimmed: int = 0
    events_deleted: int = 0
    check_rows_deleted: int = 0

    def __str__(self) -> str:
        return (f"{self.runs_deleted} runs deleted, {self.runs_trimmed} trimmed to their latest records; "
                f"{self.events_deleted} events and {self.check_rows_deleted} check rows deleted")


def prune_history(instance: dg.DagsterInstance, older_than: datetime.timedelta,
                  now: datetime.datetime | None = None, vacuum: bool = False) -> Pruned:
    """Prune the runs that finished before ``now - older_than`` (see the module). ``vacuum``:
    then VACUUM a SQLite index database, which gives the freed pages back to the disk but holds
    a write lock on it while it copies it; without it, SQLite reuses them for new rows."""
    cutoff = (now or datetime.datetime.now(datetime.UTC)) - older_than
    storage = instance.event_log_storage
    pruned = Pruned()
    records = instance.get_run_records(dg.RunsFilter(statuses=FINISHED, updated_before=cutoff))
    if records:
        sqlite_event_log.index_check_rows_by_partition(storage)
    for run in [record.dagster_run for record in records]:
        run_id = run.run_id
        events, kept, checks = sqlite_event_log.trim_run_events(
            storage, run_id, run_failed=run.status == dg.DagsterRunStatus.FAILURE,
            run_partitioned=bool({PARTITION_TAG, RANGE_START_TAG} & set(run.tags)))
        pruned.check_rows_deleted += checks
        if kept:
            pruned.events_deleted += events + sqlite_event_log.trim_run_shard(storage, run_id)
            pruned.runs_trimmed += 1
            continue
        pruned.events_deleted += events
        pruned.check_rows_deleted += sqlite_event_log.delete_run_check_rows(storage, run_id)
        storage.delete_events(run_id)
        instance.delete_run(run_id)
        sqlite_event_log.remove_run_shard(storage, run_id)
        pruned.runs_deleted += 1
    if vacuum and records:
        sqlite_event_log.vacuum_index(storage)
    return pruned

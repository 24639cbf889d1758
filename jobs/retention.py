"""``history_retention``: prunes runs that finished more than ``older_than_days`` ago down to
what Dagster's statuses and lineage read (``resources.retention``), daily at 03:00 by its
schedule. Instance-wide, so only this project's own code location defines it."""

import datetime

import dagster as dg

from resources.retention import prune_history

JOB = "history_retention"


class RetentionConfig(dg.Config):
    older_than_days: float = 30.0
    vacuum: bool = False  # SQLite: give the freed pages back to the disk (a write lock while it copies)


@dg.op(description="Prune finished runs older than the set age to their latest records.")
def prune_old_runs(context: dg.OpExecutionContext, config: RetentionConfig) -> dg.Output[None]:
    pruned = prune_history(context.instance, datetime.timedelta(days=config.older_than_days), vacuum=config.vacuum)
    context.log.info(f"runs finished over {config.older_than_days:g} days ago: {pruned}")
    return dg.Output(None, metadata={k: dg.MetadataValue.int(v) for k, v in vars(pruned).items()})


@dg.job(name=JOB, description="Bounded history: runs older than the set age keep only their latest records.")
def history_retention_job():
    prune_old_runs()


def build_retention_schedule(older_than_days: float) -> dg.ScheduleDefinition:
    """The daily schedule of ``history_retention``, running by default."""
    return dg.ScheduleDefinition(
        name=f"{JOB}_daily", job=history_retention_job, cron_schedule="0 3 * * *",
        run_config=dg.RunConfig(ops={"prune_old_runs": RetentionConfig(older_than_days=older_than_days)}),
        default_status=dg.DefaultScheduleStatus.RUNNING)

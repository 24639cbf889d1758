"""The stream keeper: keeps exactly one media stream run (``media_stream_job``) going.

Each tick:

- no stream run is active: request one, unless a user terminated the last one (then say so:
  launch ``media_stream_job`` from the launchpad, or restart this sensor's stack, to resume),
  or is terminating it (it drains: that can take longer than a tick);
  a stream that failed or crashed, or whose stack was stopped, is started again;
- the active stream has run longer than ``rotate_after_s``: request its successor, which
  starts pulling while the old run still works; the old run sees it and stops (the messages
  it held go back to Pub/Sub at once). So a stream run's page and event log stay bounded.

Run keys name the run they follow (``stream-after-<run ID>``), so a tick repeated after a
crash of the daemon requests nothing twice.
"""

import time

import dagster as dg

ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
          dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def build_stream_sensor(job: dg.JobDefinition, *, rotate_after_s: float, name: str = "media_stream_keeper",
                        minimum_interval_seconds: int = 5,
                        default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING) -> dg.SensorDefinition:
    @dg.sensor(name=name, job=job, minimum_interval_seconds=minimum_interval_seconds, default_status=default_status,
               description="Keeps one media stream run going: starts it, restarts it after a crash, and "
                           "rotates it after a while.")
    def _sensor(context: dg.SensorEvaluationContext):
        return keep_stream(context.instance, job.name, rotate_after_s, time.time())

    return _sensor


def keep_stream(instance: dg.DagsterInstance, job_name: str, rotate_after_s: float,
                now: float) -> dg.RunRequest | dg.SkipReason:
    active = instance.get_run_records(dg.RunsFilter(job_name=job_name, statuses=ACTIVE), limit=5)
    if not active:
        last = instance.get_run_records(dg.RunsFilter(job_name=job_name), limit=1)
        if last and last[0].dagster_run.status == dg.DagsterRunStatus.CANCELED:
            return dg.SkipReason(f"the last stream run ({last[0].dagster_run.run_id}) was terminated: launch "
                                 f"{job_name} to resume")
        after = last[0].dagster_run.run_id if last else "none"
        return dg.RunRequest(run_key=f"stream-after-{after}")
    running = [r for r in active if r.dagster_run.status != dg.DagsterRunStatus.CANCELING]
    if not running:
        return dg.SkipReason(f"stream run {active[0].dagster_run.run_id} is being terminated")
    newest = max(running, key=lambda r: r.create_timestamp)
    started = newest.start_time or newest.create_timestamp.timestamp()
    if len(running) == 1 and newest.dagster_run.status == dg.DagsterRunStatus.STARTED and rotate_after_s \
            and now - started >= rotate_after_s:
        return dg.RunRequest(run_key=f"stream-after-{newest.dagster_run.run_id}")
    return dg.SkipReason(f"stream run {newest.dagster_run.run_id} is {newest.dagster_run.status.value}")

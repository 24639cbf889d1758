"""Ingestion (c) and scale (d) against the real local stack: ``scripts/dev.sh`` (``dagster dev``
with its daemon, the project's dagster.yaml and the Pub/Sub emulator).

The stack's run queue is held (``max_concurrent_runs: 0``): runs are created and queued, as
the sensor and a backfill create them, but none executes, so what is timed is ingestion and
launch alone, not media work competing for the cores.

(c) publish ``ingest_n`` new IDs with ``klio-publish``; time until every one is a partition and
    inside a run the sensor created;
(d) with ``scale_n`` registered IDs: the partition page's GraphQL query, the sensor's tick time
    (from Dagster's own tick records) for a tick that takes 100 new IDs, and the time to launch
    a backfill of ``launch_n`` IDs: the GraphQL call, then until the daemon has created every run.
"""

import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import dagster as dg  # noqa: E402

from klio_core.media_ids import PARTITIONS_NAME  # noqa: E402
from klio_dev.stack import MEDIA_TEAM_ONLY, start_dev_stack  # noqa: E402
from resources.dagster_tags import BACKFILL_TAG, PARTITION_TAG, RANGE_END_TAG, RANGE_START_TAG, SENSOR_NAME_TAG  # noqa: E402

SENSOR = "pubsub_media_events"
LOCATION = {"repositoryLocationName": "klio_assets", "repositoryName": "__repository__"}
# The query the UI's Partitions tab sends (PartitionHealthQuery in dagster-webserver's bundle; a
# test checks the installed bundle holds it), less its fragments for time and multi partitions.
PARTITION_PAGE = """
query PartitionHealthQuery($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      id
      partitionKeysByDimension {
        name
        type
        partitionKeys
      }
      assetPartitionStatuses {
        ... on DefaultPartitionStatuses {
          materializedPartitions
          materializingPartitions
          failedPartitions
        }
      }
    }
  }
}"""
SENSOR_TICKS = """
query Ticks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    ... on Sensor { sensorState { ticks(limit: 50) { id status timestamp endTimestamp runIds } } }
  }
}"""


@contextmanager
def stack_with_held_queue(folder: str, max_ids_per_run: int, postgres_url: str | None = None):
    """The dev stack with the project's dagster.yaml, its run queue held; with ``postgres_url``,
    the three storages of deploy/dagster.yaml (production's) on that database instead of SQLite."""
    home = os.path.join(folder, "home")
    os.makedirs(home, exist_ok=True)
    with open(os.path.join(ROOT, "dagster.yaml")) as f:
        settings = yaml.safe_load(f)
    settings["concurrency"]["runs"]["max_concurrent_runs"] = 0  # queue runs, execute none
    if postgres_url:
        with open(os.path.join(ROOT, "deploy", "dagster.yaml")) as f:
            deploy = yaml.safe_load(f)
        settings.update({name: {**deploy[name], "config": {"postgres_url": postgres_url}}
                         for name in ("run_storage", "event_log_storage", "schedule_storage")})
    with open(os.path.join(home, "dagster.yaml"), "w") as f:
        yaml.safe_dump(settings, f)
    os.environ["KLIO_SENSOR_HOLD_WHILE_QUEUED"] = "false"  # the queue never moves: the sensor must not wait for it
    try:
        # this project's location alone: a backfill over both teams' assets makes runs in each
        stack = start_dev_stack(folder, demo_count=2, max_ids_per_run=max_ids_per_run, workspace=MEDIA_TEAM_ONLY)
    finally:
        del os.environ["KLIO_SENSOR_HOLD_WHILE_QUEUED"]
    try:
        with instance_at(home) as instance:
            yield stack, instance
    finally:
        stack.stop()


@contextmanager
def instance_at(home: str):
    """The instance of the DAGSTER_HOME ``home``, with DAGSTER_HOME pointing there meanwhile
    (the local event log finds its folder through it)."""
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = home
    try:
        with dg.DagsterInstance.get() as instance:
            yield instance
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = previous


def ids_by_run(instance, runs) -> dict[str, set[str]]:
    """The media IDs each run covers (its partition range, or its one partition)."""
    keys = instance.get_dynamic_partitions(PARTITIONS_NAME)
    index = {key: i for i, key in enumerate(keys)}
    covered: dict[str, set[str]] = {}
    for run in runs:
        start = run.tags.get(RANGE_START_TAG)
        end = run.tags.get(RANGE_END_TAG)
        if start in index and end in index:
            covered[run.run_id] = set(keys[index[start]:index[end] + 1])
        elif PARTITION_TAG in run.tags:
            covered[run.run_id] = {run.tags[PARTITION_TAG]}
    return covered


def ids_in_runs(instance, runs) -> set[str]:
    return set().union(*ids_by_run(instance, runs).values())


def wait_for(condition, timeout_s: float, what: str, poll_s: float = 0.25):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout_s} s: {what}")
        time.sleep(poll_s)


def sensor_runs(instance):
    return instance.get_runs(dg.RunsFilter(tags={SENSOR_NAME_TAG: SENSOR}))


def publish_and_wait(stack, instance, folder: str, ids: list[str], timeout_s: float) -> tuple[float, float]:
    """Publish ``ids`` as events; return (seconds to publish, seconds until all are partitions
    inside sensor runs), both from the start of publishing."""
    path = os.path.join(folder, f"ids-{ids[0]}.txt")
    with open(path, "w") as f:
        f.write("\n".join(ids) + "\n")
    wanted = set(ids)
    started = time.perf_counter()
    published = stack.publish("--file", path)
    if published.returncode != 0:
        raise RuntimeError(f"klio-publish failed: {published.stderr[-2000:]}")
    publish_s = time.perf_counter() - started
    wait_for(lambda: wanted <= ids_in_runs(instance, sensor_runs(instance)), timeout_s,
             f"{len(ids)} published IDs to be partitions in sensor runs")
    return publish_s, time.perf_counter() - started


def tick_seconds_for(server, instance, ids: list[str], published_at: float) -> list[float]:
    """Durations of the finished ticks that requested the runs holding ``ids``, counted from
    ``published_at`` (wall clock) when a tick started before it: such a tick was waiting on the
    empty subscription (``WAIT_FOR_EVENTS_S``) until the events came, and that wait is not work."""
    wanted = set(ids)
    holding = {run_id for run_id, covered in ids_by_run(instance, sensor_runs(instance)).items() if covered & wanted}
    return [end - max(start, published_at) for start, end, run_ids in finished_ticks(server)
            if holding & set(run_ids)]


def tick_after_publish(stack, instance, folder: str, ids: list[str], timeout_s: float) -> float:
    """Publish ``ids`` and return the longest of the ticks that took them (``tick_seconds_for``,
    from when ``klio-publish`` returned)."""
    started = time.time()
    published_at = started + publish_and_wait(stack, instance, folder, ids, timeout_s)[0]
    wait_for(lambda: tick_seconds_for(stack.server, instance, ids, published_at), 60, "the sensor tick to be recorded")
    return max(tick_seconds_for(stack.server, instance, ids, published_at))


def latest_ticks(server) -> list[dict]:
    """The sensor's latest 50 ticks, as the webserver reports them."""
    return server.query(SENSOR_TICKS, {"selector": {**LOCATION, "sensorName": SENSOR}})["sensorOrError"][
        "sensorState"]["ticks"]


def finished_ticks(server) -> list[tuple[float, float, list[str]]]:
    """(start, end, run IDs) of the sensor's latest finished ticks that requested runs."""
    return [(t["timestamp"], t["endTimestamp"], t["runIds"]) for t in latest_ticks(server)
            if t["endTimestamp"] and t["status"] == "SUCCESS"]


def run(ingest_n: int, scale_n: int, launch_n: int, max_ids_per_run: int = 500, timeout_s: float = 600) -> dict:
    figures: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as folder, \
            stack_with_held_queue(folder, max_ids_per_run) as (stack, instance):
        server = stack.server
        # (c) ingestion
        ingest_ids = [f"ingest-{i:06d}" for i in range(ingest_n)]
        figures["publish_s"], figures["ingest_s"] = publish_and_wait(stack, instance, folder, ingest_ids, timeout_s)
        figures["ingest_runs"] = len(sensor_runs(instance))

        # (d) scale: register up to scale_n IDs
        have = len(instance.get_dynamic_partitions(PARTITIONS_NAME))
        started = time.perf_counter()
        extra = [f"catalogue-{i:06d}" for i in range(max(0, scale_n - have))]
        for chunk in range(0, len(extra), 10_000):
            instance.add_dynamic_partitions(PARTITIONS_NAME, extra[chunk:chunk + 10_000])
        figures["register_s"] = time.perf_counter() - started
        figures["registered"] = len(instance.get_dynamic_partitions(PARTITIONS_NAME))

        page = []
        for _ in range(3):
            started = time.perf_counter()
            data = server.query(PARTITION_PAGE, {"assetKey": {"path": ["mfcc"]}})
            page.append(time.perf_counter() - started)
        keys = data["assetNodeOrError"]["partitionKeysByDimension"][0]["partitionKeys"]
        assert len(keys) == figures["registered"], (len(keys), figures["registered"])
        figures["partition_page_s"] = statistics.median(page)

        new_ids = [f"new-{i:04d}" for i in range(100)]
        figures["tick_s"] = tick_after_publish(stack, instance, folder, new_ids, timeout_s)

        # (d) backfill launch
        launch_ids = instance.get_dynamic_partitions(PARTITIONS_NAME)[-launch_n:]
        asset_keys = server.media_asset_keys()
        started = time.perf_counter()
        backfill_id = server.launch_backfill(asset_keys, launch_ids)
        figures["launch_call_s"] = time.perf_counter() - started
        expected_runs = -(-len(launch_ids) // max_ids_per_run)

        def backfill_runs():
            return instance.get_runs(dg.RunsFilter(tags={BACKFILL_TAG: backfill_id}))

        wait_for(lambda: len(backfill_runs()) >= expected_runs, timeout_s,
                 f"{expected_runs} runs of backfill {backfill_id}", poll_s=0.5)
        figures["launch_s"] = time.perf_counter() - started
        assert set(launch_ids) <= ids_in_runs(instance, backfill_runs())
        figures["launch_runs"] = expected_runs
    return figures

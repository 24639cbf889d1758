"""A catalogue of a million: ``.venv/bin/python bench/catalogue.py [--sizes 100000,1000000]
[--launch-n 100000] [--postgres]``.

On the real local stack (``scripts/dev.sh`` with its daemon, the project's dagster.yaml on
SQLite, or with ``--postgres`` production's storages of deploy/dagster.yaml on a throwaway
PostgreSQL server, the run queue held as in ``bench/scale.py``: runs are created, none executes), for each
catalogue size in turn, the catalogue growing from one size to the next:

- ``klio-register --file`` of the IDs that take the catalogue to that size, run as a user runs it
  (the command's own start-up included);
- the GraphQL queries behind the asset graph, an asset's page and its Partitions tab (median
  of 3 each);
- the sensor tick that takes 100 new IDs (from Dagster's tick record: pull, plan, add, create),
  counted from when ``klio-publish`` returned if the tick was already waiting for events: the
  first after registering (the processes' key caches read the new keys then), and the median of
  the next three;
- a backfill of ``launch_n`` IDs over every media asset: the GraphQL call, then until the daemon
  has created every run, with the daemon's CPU seconds per run created (and, with ``--postgres``,
  the PostgreSQL server's: the daemon waits for it, so a launch can take longer than its CPU), the slowest sensor
  tick meanwhile (Dagster fails a sensor evaluation after 60 s) and whether Dagster reports any
  daemon unhealthy (a daemon whose iterations outlast its heartbeat is); then it cancels that
  backfill before the next size, so that each size's launch is the daemon's only backfill.

Registering from a folder listing is ``bench/register.py --n 1000000`` (in-process, no stack).
Times are wall clock on a shared machine: read them beside each other, size against size.
"""

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import dagster as dg  # noqa: E402
import scale  # noqa: E402  (bench/scale.py, beside this file)

from klio_core.media_ids import PARTITIONS_NAME  # noqa: E402
from klio_dev import bytecode  # noqa: E402
from klio_dev.postgres import throwaway_postgres  # noqa: E402
from klio_dev.stack import processes  # noqa: E402
from resources.dagster_tags import BACKFILL_TAG  # noqa: E402

ASSET_GRAPH = """
query AssetGraph {
  assetNodes { id assetKey { path } groupName isPartitioned isExecutable
    dependencyKeys { path } dependedByKeys { path } repository { location { name } } }
}"""
ASSET_PAGE = """
query AssetPage($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode { id description opNames computeKind isPartitioned
      partitionDefinition { description dimensionTypes { name dynamicPartitionsDefinitionName } }
      partitionStats { numMaterialized numMaterializing numPartitions numFailed }
      assetMaterializations(limit: 1) { partition runId timestamp }
      assetChecksOrError { ... on AssetChecks { checks { name } } } }
  }
}"""
QUERIES = {"asset graph": (ASSET_GRAPH, {}),
           "asset page (mfcc)": (ASSET_PAGE, {"key": {"path": ["mfcc"]}}),
           "Partitions tab (mfcc)": (scale.PARTITION_PAGE, {"assetKey": {"path": ["mfcc"]}})}
DAEMONS = "query { instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }"


def daemon_cpu_s() -> float:
    return sum(p.cpu_s for p in processes() if "dagster._daemon run" in p.command or "dagster-daemon run" in p.command)


def postgres_cpu_s() -> float:
    """CPU seconds of the PostgreSQL server (the bench's throwaway one, the only one running): its
    processes, and through the postmaster's children's times those that have ended (a connection
    per query under Dagster's own storages ends when its query does)."""
    total = 0.0
    for p in processes():
        if p.command.startswith("postgres:"):
            total += p.cpu_s
        elif "/bin/postgres " in p.command:
            total += p.cpu_s + p.ended_children_cpu_s
    return total


def median_query_s(server, query: str, variables: dict) -> float:
    times = []
    for _ in range(3):
        started = time.perf_counter()
        server.query(query, variables)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


CANCEL = """mutation($id: String!) { cancelPartitionBackfill(backfillId: $id) { __typename } }"""


def register(stack, folder: str, ids: list[str]) -> float:
    path = os.path.join(folder, f"register-{ids[0]}.txt")
    with open(path, "w") as f:
        f.write("\n".join(ids) + "\n")
    started = time.perf_counter()
    done = stack.command("klio-register", "--file", path, "--batch", "10000", timeout_s=1200)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"klio-register failed: {done.stderr[-2000:]}")
    return seconds


def unhealthy_daemons(server) -> list[str]:
    statuses = server.query(DAEMONS, {})["instance"]["daemonHealth"]["allDaemonStatuses"]
    return [d["daemonType"] for d in statuses if d["healthy"] is False]


def measure(stack, instance, folder: str, size: int, launch_n: int, max_ids_per_run: int) -> tuple[dict, str]:
    figures: dict = {"size": size}
    server = stack.server
    have = len(instance.get_dynamic_partitions(PARTITIONS_NAME))
    extra = [f"cat{size // 1000}k-{i:07d}" for i in range(size - have)]
    figures["registered_now"] = len(extra)
    figures["register_s"] = register(stack, folder, extra)
    figures["registered"] = len(instance.get_dynamic_partitions(PARTITIONS_NAME))
    for name, (query, variables) in QUERIES.items():
        figures[name] = median_query_s(server, query, variables)

    since = time.time()
    new_ids = [f"new{size // 1000}k-{i:04d}" for i in range(100)]
    figures["tick_s"] = scale.tick_after_publish(stack, instance, folder, new_ids, 600)
    figures["tick_steady_s"] = statistics.median(
        scale.tick_after_publish(stack, instance, folder, [f"new{size // 1000}k-{k}-{i:04d}" for i in range(100)], 600)
        for k in range(3))

    launch_ids = [k for k in instance.get_dynamic_partitions(PARTITIONS_NAME) if k.startswith(f"cat{size // 1000}k-")]
    launch_ids = launch_ids[:launch_n]
    cpu_before, db_cpu_before = daemon_cpu_s(), postgres_cpu_s()
    started = time.perf_counter()
    backfill_id = server.launch_backfill(server.media_asset_keys(), launch_ids)
    figures["launch_call_s"] = time.perf_counter() - started
    expected = -(-len(launch_ids) // max_ids_per_run)
    scale.wait_for(lambda: len(instance.get_runs(dg.RunsFilter(tags={BACKFILL_TAG: backfill_id}))) >= expected,
                   3600, f"{expected} runs of backfill {backfill_id}", poll_s=2)
    figures["launch_s"] = time.perf_counter() - started
    figures["launch_runs"] = expected
    figures["launch_ids"] = len(launch_ids)
    figures["daemon_cpu_per_run_s"] = (daemon_cpu_s() - cpu_before) / expected
    figures["postgres_cpu_per_run_s"] = (postgres_cpu_s() - db_cpu_before) / expected
    ticks = [t for t in scale.latest_ticks(server) if t["timestamp"] >= since]
    figures["slowest_sensor_tick_s"] = max((t["endTimestamp"] - t["timestamp"] for t in ticks if t["endTimestamp"]),
                                           default=0.0)
    figures["failed_sensor_ticks"] = sum(t["status"] == "FAILURE" for t in ticks)
    figures["unhealthy_daemons"] = ", ".join(unhealthy_daemons(server)) or "none"
    return figures, backfill_id


def cancel(server, backfill_id: str) -> None:
    """Cancel the backfill and wait until it is. Asked again until its status changes: a cancel
    that arrives while the daemon evaluates the backfill was written over by that evaluation here."""
    deadline = time.monotonic() + 600
    while server.backfill(backfill_id)["status"] == "REQUESTED":
        if time.monotonic() > deadline:
            raise TimeoutError(f"backfill {backfill_id} not canceled")
        server.query(CANCEL, {"id": backfill_id})
        time.sleep(10)
    server.wait_for_backfill(backfill_id, 1800, poll_s=5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="catalogue sizes, ascending")
    parser.add_argument("--launch-n", type=int, default=100_000, help="IDs in each size's backfill")
    parser.add_argument("--max-ids-per-run", type=int, default=500)
    parser.add_argument("--postgres", action="store_true",
                        help="the storages of deploy/dagster.yaml on a throwaway PostgreSQL, not SQLite")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(bytecode.summary())
    rows = []
    with contextlib.ExitStack() as stack_of:
        postgres_url = stack_of.enter_context(throwaway_postgres()) if args.postgres else None
        folder = stack_of.enter_context(tempfile.TemporaryDirectory(prefix="bench-catalogue-"))
        stack, instance = stack_of.enter_context(scale.stack_with_held_queue(folder, args.max_ids_per_run, postgres_url))
        print(f"storage: {'PostgreSQL (deploy/dagster.yaml)' if postgres_url else 'SQLite (dagster.yaml)'}", flush=True)
        for i, size in enumerate(sizes):
            figures, backfill_id = measure(stack, instance, folder, size, args.launch_n, args.max_ids_per_run)
            rows.append(figures)
            print(figures, flush=True)
            if i + 1 < len(sizes):
                # its runs never run (the queue is held), so it would stay in progress, and the
                # daemon would evaluate it on every iteration beside the next size's backfill
                cancel(stack.server, backfill_id)
    head = " | ".join(f"{r['registered']:,} IDs" for r in rows)
    print(f"\n| measure | {head} | target |\n| --- |{' --- |' * len(rows)} --- |")

    def row(label: str, key: str, fmt: str, target: str) -> None:
        print(f"| {label} | {' | '.join(format(r[key], fmt) for r in rows)} | {target} |")

    added = " | ".join(f"{r['register_s']:.1f} s ({r['registered_now']:,})" for r in rows)
    print(f"| klio-register --file (IDs added) | {added} | <= 30 s for 1,000,000 |")
    for name in QUERIES:
        row(f"GraphQL: {name}, s", name, ".2f", "<= 2 s")
    row("sensor tick taking 100 new IDs, the first after registering, s", "tick_s", ".2f", "<= 1 s")
    row("the same, the next 3 ticks of 100 new IDs (median), s", "tick_steady_s", ".2f", "<= 1 s")
    row("backfill launch, every media asset: GraphQL call, s", "launch_call_s", ".1f", "")
    launched = " | ".join(f"{r['launch_s']:.1f} s ({r['launch_ids']:,}, {r['launch_runs']})" for r in rows)
    print(f"| backfill launch: until all runs are created (IDs, runs) | {launched} | <= 60 s for 100,000 |")
    row("daemon CPU per run created, s", "daemon_cpu_per_run_s", ".2f", "")
    if args.postgres:
        row("PostgreSQL server CPU per run created, s", "postgres_cpu_per_run_s", ".2f", "")
    row("slowest sensor tick meanwhile (its last 50), s", "slowest_sensor_tick_s", ".2f", "< 60 s (Dagster's limit)")
    row("sensor ticks that failed meanwhile", "failed_sensor_ticks", "d", "0")
    row("daemons Dagster reports unhealthy after the launch", "unhealthy_daemons", "s", "none")
    return 0


if __name__ == "__main__":
    sys.exit(main())

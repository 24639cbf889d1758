"""Streaming latency on the real local stack: ``.venv/bin/python bench/latency.py [--minutes 5]``.

Starts ``scripts/dev.sh`` (``dagster dev`` with its daemon, the project's dagster.yaml, the
Pub/Sub emulator and the sensor), writes noisy clips into its data folder, publishes KlioMessages
(top-down: every media asset) and measures, per media ID, publish -> every media asset
materialized, and where the time went:

- **to run created**: until the sensor's run holding the ID was created (the media stream's run
  is older than the event: negative);
- **to run started**: until that run's process started (likewise);
- **processing and reporting**: until the ID's last materialization was stored.

Measured, side by side in this run:

(s)  single events: ``--singles`` 5 s clips, one at a time (the next is published when the last
     is done): p50 and p95;
(r)  a steady stream of 3 s clips at each of ``--rates`` events/s for ``--minutes``: p50, p95,
     and the lag trend (p50 of the first fifth of the stream against the last fifth); a rate is
     *held* when every ID is done within 60 s of the stream's end and the lag does not grow
     (the last fifth's p50 at most 5 s above the first's);
(L)  the compute-bound limit: a plain in-memory loop over the same per-item functions, one
     process per core, in IDs/s, measured before the stacks and again after them (a shared
     machine's speed drifts); ratios use the higher of the two. ``--l-fractions`` adds steady
     rates at those fractions of the first L, so that 0.8 L is run whatever the machine's speed;
(d)  durable -> shown: per ID, the longest any of its outputs took from its record being written
     (after the output itself) to its materialization being stored in Dagster: p50 and p95;
(c)  where the CPU goes: for the singles and each stream, the CPU seconds of the stack's
     processes by role (warm workers, run processes, daemon, code server, webserver, klio-dev,
     the Pub/Sub emulator) per media ID, and the share of the machine the stack used; and the
     same for ``--idle-s`` seconds with no events, first, per second.

(s) and (r) run once per ``--stacks`` value, each on a fresh stack, side by side: ``batch:0`` is
a run per sensor tick, each computing in its own fresh process (the DirectRunner); ``batch:N``
the same runs on the stack's N warm Beam workers (``KLIO_DEV_WORKERS``); ``stream:N`` the media
stream (one long-running run, ``klio_assets.framework.stream``) on N warm workers, as
``scripts/dev.sh`` runs by default.

Nothing here is a test: figures go to docs/BENCHMARKS.md.
"""

import argparse
import functools
import multiprocessing
import os
import re
import statistics
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import dagster as dg  # noqa: E402
import records  # noqa: E402  (bench/records.py: noisy clips)
import scale  # noqa: E402  (bench/scale.py: the stack's instance)

from klio_assets.definitions import MEDIA_ASSETS, MEDIA_GRAPH  # noqa: E402
from klio_assets.framework.stream import STREAM_JOB  # noqa: E402
from klio_core.media_store import LocalMediaStore  # noqa: E402
from klio_core.stack_file import DEV_PROJECT  # noqa: E402
from klio_core.wire import MediaEvent, encode_event  # noqa: E402
from klio_dev import bytecode  # noqa: E402
from klio_dev.local_workers import SINGLE_THREADED  # noqa: E402
from klio_dev.stack import MEDIA_TEAM_ONLY, processes, start_dev_stack  # noqa: E402
from resources.pubsub import PubSubResource  # noqa: E402

CORES = os.cpu_count() or 1
DRAIN_S = 60


class Stream:
    """Publishes events to the stack's emulator and reads back what Dagster recorded."""

    def __init__(self, stack, instance: dg.DagsterInstance, assets=MEDIA_GRAPH):
        os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{stack.emulator_port}"
        self.pubsub = PubSubResource(project=DEV_PROJECT)
        self.instance = instance
        self.store = LocalMediaStore(stack.data_root)
        self.assets = list(assets)  # an ID is done when each of these is materialized
        self.published: dict[str, float] = {}

    def publish(self, media_ids: list[str]) -> None:
        self.pubsub.publish(self.pubsub.topic, [(encode_event(MediaEvent(m)), {}) for m in media_ids])
        now = time.time()
        self.published.update({m: now for m in media_ids})

    def done(self, media_ids: list[str]) -> set[str]:
        """The IDs whose every media asset is materialized."""
        left = set(media_ids)
        for asset in self.assets:
            left &= set(self.instance.get_materialized_partitions(dg.AssetKey(asset)))
        return left

    def timings(self, media_ids: list[str]) -> dict[str, dict[str, float]]:
        """Per done ID: seconds from publish to run created, run started, and last materialization;
        and the longest an output of the ID took from durable (its record written, after the output
        itself) to shown (its materialization stored)."""
        last: dict[str, tuple[float, str]] = {}
        shown: dict[tuple[str, str], float] = {}
        for asset in self.assets:
            for start in range(0, len(media_ids), 500):
                chunk = media_ids[start:start + 500]
                cursor = None
                while True:
                    page = self.instance.fetch_materializations(
                        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=chunk),
                        limit=1000, cursor=cursor)
                    for r in page.records:
                        if r.partition_key not in last or r.timestamp > last[r.partition_key][0]:
                            last[r.partition_key] = (r.timestamp, r.run_id)
                        key = (asset, r.partition_key)
                        shown[key] = max(shown.get(key, 0.0), r.timestamp)
                    if not page.has_more:
                        break
                    cursor = page.cursor
        runs = {}
        out = {}
        for media_id in media_ids:
            if media_id not in last or any((a, media_id) not in shown for a in self.assets):
                continue  # not done: a run may be reporting it while this reads
            stamp, run_id = last[media_id]
            if run_id not in runs:
                runs[run_id] = self.instance.get_run_record_by_id(run_id)
            run = runs[run_id]
            sent = self.published[media_id]
            out[media_id] = {"created": run.create_timestamp.timestamp() - sent,
                             "started": (run.start_time or stamp) - sent, "done": stamp - sent,
                             "durable_to_shown": max(
                                 shown[(a, media_id)] - os.stat(self.store.record_uri(a, media_id)).st_mtime
                                 for a in self.assets)}
        return out


ROLES = [  # (role, a part of the command line, a part of its parent's), first match wins
    ("warm workers", "spawn_main", "klio-dev"), ("run processes", "spawn_main", "api grpc"),
    ("daemon", "dagster._daemon", ""), ("webserver", "dagster_webserver", ""), ("code server", "api grpc", ""),
    ("code server", "code-server", ""), ("Pub/Sub emulator", "pubsub", ""), ("klio-dev", "klio-dev", ""),
    ("dagster dev", "dagster dev", ""),
]


class CpuByRole:
    """CPU seconds the stack's processes use while it is open, by role, sampled from /proc every
    0.5 s (a process that ends between samples loses at most its last 0.5 s)."""

    def __init__(self, session: int, emulator_port: int):
        self.session, self.emulator = session, str(emulator_port)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _read(self) -> dict[int, tuple[str, float]]:
        """pid -> (role, CPU seconds so far) for the stack's processes."""
        found, everything = {}, processes()
        commands = {process.pid: process.command for process in everything}
        for process in everything:
            emulator = "pubsub" in process.command and re.search(rf"[:=]{self.emulator}(?!\d)", process.command)
            if process.session != self.session and not emulator:
                continue
            parent = commands.get(process.parent, "")
            role = next((r for r, part, of in ROLES if part in process.command and of in parent), "other")
            found[process.pid] = (role, process.cpu_s)
        return found

    def _sample(self) -> None:
        while not self.stop.wait(0.5):
            for pid, (role, seconds) in self._read().items():  # a zombie's command line is empty
                self.seen[pid] = (self.seen.get(pid, (role,))[0], seconds)

    def __enter__(self):
        self.before = {pid: seconds for pid, (_, seconds) in self._read().items()}
        self.seen: dict[int, tuple[str, float]] = {}
        self.started = time.monotonic()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.wall_s = time.monotonic() - self.started

    def totals(self) -> dict[str, float]:
        by_role: dict[str, float] = {}
        for pid, (role, seconds) in self.seen.items():
            by_role[role] = by_role.get(role, 0.0) + seconds - self.before.get(pid, 0.0)
        return dict(sorted(by_role.items(), key=lambda item: -item[1]))

    def row(self, name: str, per: float) -> str:
        """CPU per role in ms per ``per`` (media IDs, or seconds), and the share of the machine
        the stack used."""
        totals = self.totals()
        used = sum(totals.values()) / (self.wall_s * CORES)
        return (f"| {name} | {used:.1%} | "
                + ", ".join(f"{role} {1000 * s / per:.0f}" for role, s in totals.items() if s >= 0.05) + " |")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def singles(stream: Stream, ids: list[str], timeout_s: float = 300) -> dict[str, dict[str, float]]:
    for media_id in ids:
        stream.publish([media_id])
        deadline = time.monotonic() + timeout_s
        while not stream.done([media_id]) and time.monotonic() < deadline:
            time.sleep(0.2)
    return stream.timings(ids)


def steady(stream: Stream, ids: list[str], rate: float) -> tuple[dict[str, dict[str, float]], float]:
    """Publish ``ids`` at ``rate`` per second (in batches of what is due every 0.2 s); wait until
    all are done or ``DRAIN_S`` past the end; the timings and the seconds the drain took."""
    started = time.monotonic()
    sent = 0
    while sent < len(ids):
        due = min(len(ids), int((time.monotonic() - started) * rate) + 1)
        if due > sent:
            stream.publish(ids[sent:due])
            sent = due
        time.sleep(0.2)
    ended = time.monotonic()
    while len(stream.done(ids)) < len(ids) and time.monotonic() - ended < DRAIN_S:
        time.sleep(1)
    return stream.timings(ids), time.monotonic() - ended


def _limit_worker(args: tuple[str, list[str]]) -> tuple[float, float, int]:
    """In a fresh process: warm up on the first ID, then time the chain over the rest."""
    from klio_core.media_store import LocalMediaStore
    from klio_core.media_types import SourceMedia
    from pipelines.graph import call_chain

    root, ids = args
    store = LocalMediaStore(root)
    tasks = [media.task(None) for media in MEDIA_ASSETS]

    def run(media_id: str) -> None:
        call_chain(tasks, SourceMedia(media_id, *store.read_source(media_id)))

    run(ids[0])
    start = time.time()
    for media_id in ids[1:]:
        run(media_id)
    return start, time.time(), len(ids) - 1


def compute_bound_limit(root: str, ids: list[str]) -> float:
    """IDs/s of a plain in-memory loop over every media asset's function, one process per core
    (each single-threaded)."""
    os.environ.update(SINGLE_THREADED)  # as the dev stack's workers
    shares = [(root, ids[i::CORES]) for i in range(CORES)]
    pool = multiprocessing.get_context("spawn").Pool(CORES)
    try:
        spans = pool.map(_limit_worker, shares)
    finally:  # not terminate(): see bench/run.py's plain_loop
        pool.close()
        pool.join()
    return sum(n for _, _, n in spans) / (max(e for _, e, _ in spans) - min(s for s, _, _ in spans))


def wait_for_stream(instance: dg.DagsterInstance, timeout_s: float = 300, job: str = STREAM_JOB) -> None:
    """Until the stack's media stream run has started (its keeper sensor starts it)."""
    deadline = time.monotonic() + timeout_s
    while not instance.get_runs(dg.RunsFilter(job_name=job, statuses=[dg.DagsterRunStatus.STARTED])):
        if time.monotonic() > deadline:
            raise TimeoutError("the media stream did not start")
        time.sleep(1)
    time.sleep(2)


def summarize(name: str, timings: dict[str, dict[str, float]], expected: int) -> str:
    done = [timings[m]["done"] for m in timings]
    parts = {k: statistics.median(t[k] for t in timings.values()) for k in ("created", "started", "done")} \
        if timings else {}
    shown = [t["durable_to_shown"] for t in timings.values()]
    return (f"| {name} | {len(timings)}/{expected} | {percentile(done, 50):.1f} | {percentile(done, 95):.1f} | "
            f"{parts.get('created', float('nan')):.1f} / {parts.get('started', float('nan')):.1f} / "
            f"{parts.get('done', float('nan')):.1f} | {percentile(shown, 50):.2f} / {percentile(shown, 95):.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--singles", type=int, default=10, help="single events, one at a time (default 10)")
    parser.add_argument("--rates", type=float, nargs="*", default=[1, 5, 20], help="events/s (default 1 5 20)")
    parser.add_argument("--minutes", type=float, default=5.0, help="length of each stream (default 5)")
    parser.add_argument("--idle-s", type=float, default=20.0, help="idle stack's CPU, measured first (default 20)")
    parser.add_argument("--limit-n", type=int, default=40, help="clips for the compute-bound limit (default 40)")
    parser.add_argument("--l-fractions", type=float, nargs="*", default=[],
                        help="also steady rates at these fractions of L measured first (e.g. 0.8 0.9)")
    parser.add_argument("--teams", type=int, default=0,
                        help="single events through both teams' streams (publish -> the tags team's outputs) "
                             "on a stack of the repository's workspace (default 0: none)")
    parser.add_argument("--stacks", nargs="*", default=["batch:0", f"batch:{CORES}", f"stream:{CORES}"],
                        help="stacks to compare, each MODE:WORKERS: batch (a run per sensor tick) or stream "
                             f"(the media stream), KLIO_DEV_WORKERS warm workers (default batch:0 batch:{CORES} "
                             f"stream:{CORES})")
    args = parser.parse_args()
    print(bytecode.summary())

    folder = tempfile.mkdtemp(prefix="bench-latency-")
    limit_root = os.path.join(folder, "limit")
    limit_ids = records.write_noisy_catalogue(os.path.join(limit_root, "sources"), "limit", args.limit_n + CORES, 3.0)
    limit_first = compute_bound_limit(limit_root, limit_ids)
    args.rates = sorted({*args.rates, *(round(f * limit_first, 1) for f in args.l_fractions)})
    print(f"compute-bound limit L, first: {limit_first:.2f} IDs/s; steady rates: {args.rates}", flush=True)
    rows, cpu_rows, held = [], [], {}
    for stack in args.stacks:
        mode, _, workers = stack.partition(":")
        os.environ["KLIO_DEV_WORKERS"] = workers
        label = ("the media stream, " if mode == "stream" else "") + (
            f"{workers} warm workers" if int(workers) else "a process per run")
        held[label] = measure_stack(os.path.join(folder, f"{mode}-{workers}"), args, label, rows, cpu_rows,
                                    streaming=mode == "stream")
    if args.teams:
        os.environ["KLIO_DEV_WORKERS"] = str(CORES)
        measure_teams(os.path.join(folder, "teams"), args.teams, rows)
    limit_last = compute_bound_limit(limit_root, limit_ids)
    limit = max(limit_first, limit_last)

    print(f"\nmachine: {CORES} cores; {len(MEDIA_GRAPH)} media assets per ID (top-down)\n")
    print("| events | done | p50 s | p95 s | median to run created / started / done, s "
          "| durable -> shown in Dagster p50 / p95 s | lag, first -> last fifth p50 s | rate |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(row if row.count("|") > 7 else row + " | |")
    print("\n| stream | CPU used (of all cores) | CPU ms per media ID (idle: per second), by process role |")
    print("| --- | --- | --- |")
    print("\n".join(cpu_rows))
    print(f"\ncompute-bound limit L (plain loop, one process per core, 3 s clips): {limit_first:.2f} IDs/s "
          f"before the stacks, {limit_last:.2f} after; ratios use the higher, {limit:.2f}")
    for label, rates in held.items():
        best = max(rates, default=0)
        print(f"highest rate held, {label}: {best:g} events/s = {best / limit:.2f} L (target >= 0.8 L)")
    return 0


def measure_teams(folder: str, count: int, rows: list[str]) -> None:
    """Single events published to this project's location on a stack of both teams' locations
    (its streams): when the media team's outputs are done, and when the tags team's that read its
    announced waveform are (two streams chained through Pub/Sub)."""
    from music_tags.assets import TAGS_ASSETS

    os.makedirs(folder)
    stack = start_dev_stack(folder, demo_count=0, max_ids_per_run=500, streaming=True)
    try:
        ids = records.write_noisy_catalogue(os.path.join(stack.data_root, "sources"), "teams", count, 5.0)
        readers = [o.asset for a in TAGS_ASSETS for o in a.outputs if "waveform" in a.upstream]
        with scale.instance_at(os.path.join(folder, "home")) as instance:
            wait_for_stream(instance)
            wait_for_stream(instance, job="music_tags_" + STREAM_JOB)
            media = Stream(stack, instance)
            tags = Stream(stack, instance, assets=readers)
            tags.published = media.published  # the same events: timed from their one publish
            print(f"two teams: single events: {count} x 5 s clips", flush=True)
            singles(tags, ids)
            deadline = time.monotonic() + 300
            while media.done(ids) != set(ids) and time.monotonic() < deadline:
                time.sleep(0.5)
            rows.append(summarize("two teams: publish -> the media team's outputs, 5 s clips", media.timings(ids), count))
            rows.append(summarize(f"two teams: publish -> the tags team's {', '.join(readers)}", tags.timings(ids),
                                  count))
    finally:
        stack.stop()


def measure_stack(folder: str, args, label: str, rows: list[str], cpu_rows: list[str],
                  streaming: bool = False) -> list[float]:
    """The singles and streams on a fresh dev stack in ``folder``; appends their rows, and the
    CPU by role of the idle stack, the singles and each stream, and returns the rates held."""
    held = []
    os.makedirs(folder)
    # this project's location alone: L is its functions' limit, and no other team shares the cores
    stack = start_dev_stack(folder, demo_count=0, max_ids_per_run=500, streaming=streaming, workspace=MEDIA_TEAM_ONLY)
    try:
        sources = os.path.join(stack.data_root, "sources")
        single_ids = records.write_noisy_catalogue(sources, "single", args.singles, 5.0)
        streams = {rate: records.write_noisy_catalogue(sources, f"r{rate:g}", int(rate * args.minutes * 60), 3.0)
                   for rate in args.rates}
        with scale.instance_at(os.path.join(folder, "home")) as instance:
            stream = Stream(stack, instance)
            cpu_by_role = functools.partial(CpuByRole, stack.process.pid, stack.emulator_port)
            print(f"{label}: idle for {args.idle_s:g} s", flush=True)
            time.sleep(5)  # the workers' warm-up, which starts with the stack, is over by then
            if streaming:
                wait_for_stream(instance)
            with cpu_by_role() as cpu:
                time.sleep(args.idle_s)
            cpu_rows.append(cpu.row(f"{label}: idle (CPU ms per second, not per ID)", args.idle_s))
            print(f"{label}: single events: {args.singles} x 5 s clips", flush=True)
            with cpu_by_role() as cpu:
                timings = singles(stream, single_ids)
            rows.append(summarize(f"{label}: single events, 5 s clips", timings, args.singles))
            cpu_rows.append(cpu.row(f"{label}: single events (a run each)", len(single_ids)))
            for rate, ids in streams.items():
                print(f"{label}: steady stream: {rate:g} events/s for {args.minutes:g} min ({len(ids)} x 3 s clips)",
                      flush=True)
                with cpu_by_role() as cpu:
                    timings, drain_s = steady(stream, ids, rate)
                cpu_rows.append(cpu.row(f"{label}: {rate:g} events/s", len(ids)))
                fifth = max(1, len(ids) // 5)
                first = [timings[m]["done"] for m in ids[:fifth] if m in timings]
                last = [timings[m]["done"] for m in ids[-fifth:] if m in timings]
                p_first, p_last = percentile(first, 50), percentile(last, 50)
                ok = len(timings) == len(ids) and p_last <= p_first + 5
                if ok:
                    held.append(rate)
                rows.append(summarize(f"{label}: {rate:g} events/s, 3 s clips", timings, len(ids))
                            + f" {p_first:.1f} -> {p_last:.1f} | {'held' if ok else 'not held'} (drain {drain_s:.0f} s) |")
    finally:
        stack.stop()
    return held


if __name__ == "__main__":
    sys.exit(main())

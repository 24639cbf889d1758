"""How fast the Dagster home grows on the real local stack, and what retention frees:
``.venv/bin/python bench/growth.py [--idle-s 300] [--stream-s 600] [--rate 1.0] [--batch]
[--rotate-after-s 120]``.

Starts ``scripts/dev.sh`` (its dagster.yaml, daemon and Pub/Sub emulator; the media stream, as
``scripts/dev.sh`` runs by default, or with ``--batch`` a batch run per sensor tick), then
measures the bytes under ``DAGSTER_HOME`` (runs and event logs, sensor ticks, the rest) over an
idle spell and over a steady stream of KlioMessages (top-down, each a new media ID with a noisy
3 s clip), and extrapolates each to an hour and a week. The stream run is rotated every
``--rotate-after-s`` (an hour by default in ``scripts/dev.sh``) so that finished stream runs
exist to prune. Last, it prunes every finished run to its latest records (``resources.retention``
with an age of 0, then VACUUM), as the daily ``history_retention`` does to runs past its age,
and reports what that freed. Sizes, not times, are what it reports; the stream also reports
how many of its IDs were fully processed, since this 2-core machine does not keep up with
every rate.
"""

import argparse
import datetime
import os
import sqlite3
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import dagster as dg  # noqa: E402
import numpy as np  # noqa: E402
import soundfile  # noqa: E402

from bench.scale import instance_at  # noqa: E402
from klio_core.wire import MediaEvent, encode_event  # noqa: E402
from klio_dev import bytecode  # noqa: E402
from klio_dev.stack import start_dev_stack  # noqa: E402
from resources.pubsub import PubSubResource  # noqa: E402
from resources.retention import prune_history  # noqa: E402

WEEK_H = 24 * 7


def sizes(home: str) -> dict[str, int]:
    """Bytes under ``home``: ``ticks`` (schedule storage: sensor ticks and their cursors),
    ``runs`` (run storage and event logs), ``other``."""
    out = {"ticks": 0, "runs": 0, "other": 0}
    for folder, _, files in os.walk(home):
        for name in files:
            path = os.path.join(folder, name)
            size = os.path.getsize(path) if os.path.isfile(path) else 0
            part = os.path.relpath(path, home).split(os.sep)[0]
            out["ticks" if part == "schedules" else "runs" if part == "history" else "other"] += size
    return out


def ticks_and_cursor(home: str) -> tuple[int, int]:
    """How many ticks the schedule storage holds, and the largest tick body (it carries the cursor)."""
    db = os.path.join(home, "schedules", "schedules.db")
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        count, largest = connection.execute("SELECT COUNT(*), MAX(LENGTH(tick_body)) FROM job_ticks").fetchone()
    return count, largest or 0


def noisy_clips(folder: str, count: int, seconds: float = 3.0, rate: int = 22050) -> None:
    rng = np.random.default_rng(3)
    for i in range(count):
        samples = (0.2 * rng.standard_normal(int(seconds * rate))).astype(np.float32)
        soundfile.write(os.path.join(folder, f"stream-{i:05d}.wav"), samples, rate, subtype="PCM_16")


def row(label: str, before: dict, after: dict, seconds: float) -> str:
    grown = {k: after[k] - before[k] for k in before}
    total = sum(grown.values())
    per_hour = total / seconds * 3600
    return (f"| {label} | {seconds / 60:.1f} | {grown['runs'] / 1e6:.2f} | {grown['ticks'] / 1e6:.2f} | "
            f"{grown['other'] / 1e6:.2f} | {per_hour / 1e6:.1f} | {per_hour * WEEK_H / 1e9:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-s", type=float, default=300)
    parser.add_argument("--stream-s", type=float, default=600)
    parser.add_argument("--rate", type=float, default=1.0, help="events per second in the stream")
    parser.add_argument("--batch", action="store_true", help="a batch run per sensor tick, not the media stream")
    parser.add_argument("--rotate-after-s", type=float, default=120, help="the media stream's rotation")
    args = parser.parse_args()
    print(bytecode.summary())
    count = int(args.stream_s * args.rate)
    os.environ["KLIO_STREAM_ROTATE_AFTER_S"] = str(args.rotate_after_s)
    with tempfile.TemporaryDirectory(prefix="bench-growth-") as folder:
        stack = start_dev_stack(folder, demo_count=2, max_ids_per_run=500, streaming=not args.batch)
        home = stack.env["DAGSTER_HOME"]
        try:
            sources = os.path.join(stack.data_root, "sources")
            noisy_clips(sources, count)
            os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{stack.emulator_port}"
            pubsub = PubSubResource(project="klio-dev")
            time.sleep(30)  # let the demo registration and first ticks settle
            print(HEADER, flush=True)
            before, started = sizes(home), time.monotonic()
            time.sleep(args.idle_s)
            print(row("idle (sensor ticking every 5 s)", before, sizes(home), time.monotonic() - started), flush=True)
            ticks_idle = ticks_and_cursor(home)

            before, started = sizes(home), time.monotonic()
            for i in range(count):
                pubsub.publish(pubsub.topic, [(encode_event(MediaEvent(f"stream-{i:05d}")), {})])
                time.sleep(max(0.0, started + (i + 1) / args.rate - time.monotonic()))
            elapsed = time.monotonic() - started
            after = sizes(home)
            print(row(f"stream, {args.rate:g} event/s (top-down, noisy 3 s clips)", before, after, elapsed))
            with instance_at(home) as instance:
                done = len(instance.get_materialized_partitions(dg.AssetKey("mfcc_plot")))
            ticks, largest = ticks_and_cursor(home)
            print(f"\nstream: {count} events published, {done} media IDs fully materialized by the end of the stream")
            print(f"ticks stored: {ticks_idle[0]} after the idle spell, {ticks} at the end; "
                  f"largest tick body {largest} bytes", flush=True)
            print_retention(home, before, elapsed)
        finally:
            started = time.monotonic()
            returncode, survivors = stack.stop(group_timeout_s=60)
            print(f"stack stopped in {time.monotonic() - started:.0f} s (exit {returncode}); left running: {survivors}")


def print_retention(home: str, before_stream: dict, stream_s: float) -> None:
    """Prune every finished run (age 0) and VACUUM; print what the stream's runs and event logs
    took before and after, and what that is a week."""
    grown = sizes(home)["runs"] - before_stream["runs"]
    with instance_at(home) as instance:
        pruned = prune_history(instance, datetime.timedelta(0), vacuum=True)
        running = instance.get_runs_count(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    kept = sizes(home)["runs"] - before_stream["runs"]
    week = WEEK_H * 3600 / stream_s
    print(f"\nretention (every finished run; {running} still running, not pruned): {pruned}")
    print("| runs + event logs of the stream | MB | per week, GB |\n| --- | --- | --- |")
    for label, size in (("before retention", grown), ("after retention and VACUUM", kept),
                        ("freed", grown - kept)):
        print(f"| {label} | {size / 1e6:.2f} | {size * week / 1e9:.2f} |")


HEADER = ("| phase | minutes | runs + event logs, MB | sensor ticks, MB | other, MB | per hour, MB | per week, GB |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")


if __name__ == "__main__":
    main()

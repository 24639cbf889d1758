"""Dagster bytes per media ID: ``.venv/bin/python bench/records.py [--n 20] [--seconds 30]
[--postgres] [--stream]``.

Noisy clips (a few tones under broadband noise, as incompressible as real audio) go through
every built-in asset (the 13 of ``klio_assets.definitions``) in ONE run (a backfill run; with
``--stream``, the media stream taking one event per ID from the real Pub/Sub emulator), on an instance made by
the project's own ``dagster.yaml`` (SQLite). Reported: how much the Dagster home grew per media
ID, and where it went, by event type, in the run's shard and in the index database; with
``--postgres``, also how much a PostgreSQL database with the storages of ``deploy/dagster.yaml``
grew for the same run, table by table (a throwaway server, ``klio_dev/postgres.py``).
A first run over two other IDs comes before, so that tables and files that every instance
creates once are not counted. Then each is measured again after retention
(``resources.retention``, age 0: what every run keeps once it is older than
``KLIO_RETENTION_DAYS``), with the freed space compacted (SQLite VACUUM, PostgreSQL VACUUM FULL)
so that the files show what is left; on a live instance the freed pages are reused instead.
"""

import argparse
import datetime
import os
import shutil
import sqlite3
import sys
import tempfile
from contextlib import contextmanager, nullcontext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import dagster as dg  # noqa: E402
import numpy as np  # noqa: E402
import scale as scale_bench  # noqa: E402  (bench/scale.py, beside this file)
import soundfile  # noqa: E402
import yaml  # noqa: E402

from klio_assets import build_media_assets  # noqa: E402
from klio_assets.definitions import MEDIA_ASSETS  # noqa: E402
from klio_assets.framework.stream import build_media_stream_job  # noqa: E402
from klio_core.wire import MediaEvent, encode_event  # noqa: E402
from klio_dev import bytecode  # noqa: E402
from klio_dev.postgres import throwaway_postgres  # noqa: E402
from klio_dev.pubsub_emulator import PubSubEmulator  # noqa: E402
from pipelines.graph import in_dependency_order  # noqa: E402
from resources.beam import BeamRunner  # noqa: E402
from resources.dagster_tags import partition_range_tags  # noqa: E402
from resources.pubsub import PubSubResource  # noqa: E402
from resources.retention import prune_history  # noqa: E402
from resources.storage import LocalMediaStorage  # noqa: E402

RATE = 44100


def noisy_clip(seconds: float, seed: int) -> np.ndarray:
    """A few tones under broadband noise: plots and arrays as incompressible as real audio."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    tones = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(80, 2000, 4)) / 8
    return (0.3 * tones + 0.2 * rng.standard_normal(t.size)).astype(np.float32)


def write_noisy_catalogue(source_dir: str, prefix: str, count: int, seconds: float) -> list[str]:
    os.makedirs(source_dir, exist_ok=True)
    ids = [f"{prefix}-{i:04d}" for i in range(count)]
    for media_id in ids:
        soundfile.write(os.path.join(source_dir, media_id + ".flac"), noisy_clip(seconds, seed=hash(media_id) % 2**32),
                        RATE, subtype="PCM_16")
    return ids


def home_bytes(home: str) -> int:
    """Bytes under ``home`` once every SQLite write-ahead log is checkpointed into its database
    (a WAL is a bounded buffer that SQLite reuses, not growth)."""
    for folder, _, files in os.walk(home):
        for name in files:
            if name.endswith(".db"):
                with sqlite3.connect(os.path.join(folder, name)) as connection:
                    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(os.path.getsize(os.path.join(folder, name)) for folder, _, files in os.walk(home) for name in files)


@contextmanager
def project_instance(postgres_url: str | None = None):
    """The project's dagster.yaml (SQLite), or the storages of deploy/dagster.yaml on ``postgres_url``."""
    with tempfile.TemporaryDirectory(prefix="bench-records-home-") as home:
        if postgres_url:
            with open(os.path.join(ROOT, "deploy", "dagster.yaml")) as f:
                deploy = yaml.safe_load(f)
            storages = {name: {**deploy[name], "config": {"postgres_url": postgres_url}}
                        for name in ("run_storage", "event_log_storage", "schedule_storage")}
            with open(os.path.join(home, "dagster.yaml"), "w") as f:
                yaml.safe_dump({"telemetry": {"enabled": False}, **storages}, f)
        else:
            shutil.copy(os.path.join(ROOT, "dagster.yaml"), home)
        with scale_bench.instance_at(home) as instance:
            yield home, instance


def postgres_tables(url: str) -> dict[str, int]:
    """Bytes of each table of the database, with its indexes and TOAST (compressed large values)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.connect() as connection:
        sizes = dict(connection.execute(sqlalchemy.text(
            "SELECT relname, pg_total_relation_size(oid) FROM pg_class "
            "WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace")).all())
        sizes["(whole database)"] = connection.execute(sqlalchemy.text("SELECT pg_database_size('dagster')")).scalar()
    engine.dispose()
    return {name: int(size) for name, size in sizes.items()}


QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
STREAM: dict = {}  # with --stream: the emulator's Pub/Sub resource, under "pubsub"


def run_all(instance, root: str, ids: list[str]) -> dg.ExecuteInProcessResult:
    """One backfill run over ``ids``, or with ``STREAM`` the media stream over one event per ID."""
    storage = LocalMediaStorage(root=root, media_url="http://127.0.0.1:3001")
    if STREAM:
        pubsub = STREAM["pubsub"]
        pubsub.publish(pubsub.topic, [(encode_event(MediaEvent(media_id)), {}) for media_id in ids])
        return build_media_stream_job(in_dependency_order(MEDIA_ASSETS)).execute_in_process(
            instance=instance, resources={"media_storage": storage, "beam_runner": BeamRunner(), "pubsub": pubsub},
            run_config={**QUIET, "ops": {"media_stream": {"config": {"stop_after_idle_s": 5.0}}}})
    instance.add_dynamic_partitions("media_ids", ids)
    return dg.materialize(
        [build_media_assets(MEDIA_ASSETS)], instance=instance,
        resources={"media_storage": storage, "beam_runner": BeamRunner()},
        tags=partition_range_tags(ids[0], ids[-1]), run_config=QUIET)


@contextmanager
def streaming():
    """``run_all`` runs the media stream meanwhile, on a Pub/Sub emulator of its own."""
    with PubSubEmulator(project="klio-bench") as emulator:
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
        pubsub = PubSubResource(project="klio-bench", topic="bench-events", subscription="bench-events-dagster")
        pubsub.ensure_exists()
        STREAM["pubsub"] = pubsub
        try:
            yield
        finally:
            STREAM.clear()
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)


def by_event_type(home: str, run_id: str) -> dict[str, tuple[int, int]]:
    """Event type -> (count, bytes of serialized events) in the run's shard and the index."""
    out: dict[str, tuple[int, int]] = {}

    def add(kind: str, count: int, size: int | None) -> None:
        seen_count, seen_size = out.get(kind, (0, 0))
        out[kind] = (seen_count + count, seen_size + (size or 0))

    for db in (os.path.join(home, "history", "runs", f"{run_id}.db"), os.path.join(home, "history", "runs", "index.db")):
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
            for kind, count, size in connection.execute(
                    "SELECT dagster_event_type, COUNT(*), SUM(LENGTH(event)) FROM event_logs "
                    "WHERE run_id = ? GROUP BY dagster_event_type", (run_id,)):
                add(kind or "log message", count, size)
            if db.endswith("index.db"):
                add("check execution rows (index)", *connection.execute(
                    "SELECT COUNT(*), SUM(LENGTH(evaluation_event)) FROM asset_check_executions WHERE run_id = ?",
                    (run_id,)).fetchone())
    return out


def _around_a_run(instance, root: str, n: int, seconds: float, snapshot):
    """``snapshot()`` before and after one run of ``n`` noisy clips, and the run's result. A first
    run over two other IDs comes before (tables and files every instance makes once are not counted)."""
    warm = write_noisy_catalogue(os.path.join(root, "sources"), "warm", 2, seconds)
    measured = write_noisy_catalogue(os.path.join(root, "sources"), "clip", n, seconds)
    assert run_all(instance, root, warm).success
    before = snapshot()
    result = run_all(instance, root, measured)
    assert result.success
    return before, snapshot(), result


def measure_postgres(n: int, seconds: float) -> tuple[dict[str, float], dict[str, float]]:
    """Bytes a PostgreSQL instance's database, and each of its tables, grew per media ID over the
    same kind of run; and the same after retention."""
    with throwaway_postgres() as url, tempfile.TemporaryDirectory(prefix="bench-records-") as root, \
            project_instance(url) as (_, instance):
        before, after, _ = _around_a_run(instance, root, n, seconds, lambda: postgres_tables(url))
        prune_history(instance, datetime.timedelta(0))
        vacuum_full(url)
        retained = postgres_tables(url)
        grown = {name: (after[name] - before.get(name, 0)) / n for name in after}
        return grown, {name: (retained[name] - before.get(name, 0)) / n for name in retained}


def vacuum_full(url: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text("VACUUM FULL"))
    engine.dispose()


def measure(n: int, seconds: float) -> tuple[float, dict, float, dict]:
    """Bytes the Dagster home grew per media ID over one run of ``n`` noisy clips, and the run's
    events by type (count, bytes); the same after retention."""
    with tempfile.TemporaryDirectory(prefix="bench-records-") as root, project_instance() as (home, instance):
        before, after, result = _around_a_run(instance, root, n, seconds, lambda: home_bytes(home))
        events = by_event_type(home, result.run_id)
        prune_history(instance, datetime.timedelta(0), vacuum=True)
        return (after - before) / n, events, (home_bytes(home) - before) / n, by_event_type(home, result.run_id)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="media IDs in the measured run")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each clip")
    parser.add_argument("--postgres", action="store_true", help="also measure a PostgreSQL instance")
    parser.add_argument("--stream", action="store_true", help="the media stream, not a backfill run")
    args = parser.parse_args()
    print(bytecode.summary())
    with streaming() if args.stream else nullcontext():
        per_id, events, retained_per_id, retained_events = measure(args.n, args.seconds)
        on_postgres = measure_postgres(args.n, args.seconds) if args.postgres else None
    print(f"Dagster home (SQLite, project dagster.yaml), {args.n} noisy {args.seconds:g} s clips, "
          f"{sum(len(a.outputs) for a in MEDIA_ASSETS)} media assets, one {'stream' if args.stream else 'backfill'} run\n")
    print("| what, per media ID | after the run | after retention |\n| --- | --- | --- |")
    print(f"| home growth | {per_id / 1024:.1f} kB | {retained_per_id / 1024:.1f} kB |")
    for kind, (count, size) in sorted(events.items(), key=lambda kv: -kv[1][1]):
        kept_count, kept_size = retained_events.get(kind, (0, 0))
        print(f"| {kind} | {count / args.n:.1f} rows, {size / args.n / 1024:.1f} kB "
              f"| {kept_count / args.n:.1f} rows, {kept_size / args.n / 1024:.1f} kB |")
    if on_postgres is not None:
        grown, retained = on_postgres
        print("\nPostgreSQL (the deploy's storage), growth per media ID, each table with its indexes and TOAST\n")
        print("| table | after the run | after retention |\n| --- | --- | --- |")
        for table, size in sorted(grown.items(), key=lambda kv: -kv[1]):
            if size or retained.get(table):
                print(f"| {table} | {size / 1024:.1f} kB | {retained.get(table, 0) / 1024:.1f} kB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

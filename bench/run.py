"""Benchmarks, measured side by side in one run: ``.venv/bin/python bench/run.py [--n 200]``.

(a) throughput over N synthetic 30 s clips through decode -> mel spectrogram -> MFCC:
    (i) a plain loop over the same per-item functions, (i') the same loop writing the same
    outputs (what a user would write instead), (ii) a plain Beam pipeline (no Dagster),
    (iii) this project's single-run backfill; each with one worker and with every core (the
    project also on a local Dask cluster of single-threaded workers, through Beam's DaskRunner).
(b) fixed cost of materializing one media ID end to end, beyond its compute.
(c) ingestion: --ingest-n IDs published to the Pub/Sub emulator of a real `dagster dev` stack,
    until all are partitions inside sensor runs (bench/scale.py);
(d) scale: with --scale-n registered IDs, the partition page's GraphQL query, the sensor's tick
    and the launch of a backfill of --launch-n IDs (bench/scale.py);
(e) peak memory (RSS) of a backfill run over --memory-n items, in a child process.

Every figure comes from this run; ratios compare figures measured minutes apart on the same
machine. Timed sections exclude imports and numba compilation (a warm-up item runs first).
"""

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from multiprocessing import Pool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import apache_beam as beam  # noqa: E402
import dagster as dg  # noqa: E402
import scale as scale_bench  # noqa: E402  (bench/scale.py, beside this file)
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from klio_assets import build_media_assets  # noqa: E402
from klio_assets.builtin.audio import AUDIO_ASSETS, MelSpectrogramConfig, MfccConfig, WaveformConfig  # noqa: E402
from klio_core.codecs import NDARRAY, WAVEFORM  # noqa: E402
from klio_core.media_types import SourceMedia  # noqa: E402
from klio_dev import bytecode  # noqa: E402
from klio_dev.demo import write_catalogue  # noqa: E402
from klio_dev.local_workers import local_workers  # noqa: E402
from resources.beam import BeamRunner, DaskSettings  # noqa: E402
from resources.dagster_tags import partition_range_tags  # noqa: E402
from resources.storage import LocalMediaStorage  # noqa: E402

CHAIN = ["waveform", "mel_spectrogram", "mfcc"]
FNS = {a.name: a.fn for a in AUDIO_ASSETS}
CONFIGS = {"waveform": WaveformConfig(), "mel_spectrogram": MelSpectrogramConfig(), "mfcc": MfccConfig()}
CORES = os.cpu_count() or 1


def process_file(path: str, out_dir: str | None = None):
    """The per-item work of the chain, exactly the assets' functions; with ``out_dir``, each
    value is also written there as the project stores it (float WAV, .npy)."""
    with open(path, "rb") as f:
        data = f.read()
    media_id, suffix = os.path.splitext(os.path.basename(path))
    wave = FNS["waveform"](SourceMedia(media_id, data, suffix), CONFIGS["waveform"])
    mel = FNS["mel_spectrogram"](wave, CONFIGS["mel_spectrogram"])
    mfcc = FNS["mfcc"](mel, CONFIGS["mfcc"])
    if out_dir is not None:
        for name in ("waveform", "mel_spectrogram", "mfcc"):
            os.makedirs(os.path.join(out_dir, name), exist_ok=True)
        for name, codec, value in (("waveform", WAVEFORM, wave), ("mel_spectrogram", NDARRAY, mel),
                                   ("mfcc", NDARRAY, mfcc)):
            with open(os.path.join(out_dir, name, media_id + codec.suffix), "wb") as f:
                f.write(codec.encode(value))
    return mfcc.shape


def plain_loop(paths: list[str], workers: int, out_dir: str | None = None) -> float:
    started = time.perf_counter()
    if workers == 1:
        for path in paths:
            process_file(path, out_dir)
    else:
        pool = Pool(workers)
        try:
            pool.starmap(process_file, [(p, out_dir) for p in paths],
                         chunksize=max(1, len(paths) // (workers * 8)))
        finally:  # not Pool's terminate(): its SIGTERM is ignored where Dagster mapped it to an ignored SIGINT
            pool.close()
            pool.join()
    return time.perf_counter() - started


def plain_beam(paths: list[str], workers: int) -> float:
    args = ["--runner=DirectRunner"] + (["--direct_running_mode=in_memory"] if workers == 1 else
                                        [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"])
    started = time.perf_counter()
    with beam.Pipeline(options=PipelineOptions(args)) as p:
        p | beam.Create(paths) | beam.Reshuffle() | beam.Map(process_file)
    return time.perf_counter() - started


@contextmanager
def project_instance():
    """A fresh instance configured by the project's own dagster.yaml, as `dagster dev` uses it."""
    with tempfile.TemporaryDirectory() as home:
        shutil.copy(os.path.join(ROOT, "dagster.yaml"), home)
        with scale_bench.instance_at(home) as instance:
            yield instance


def project_backfill(root: str, ids: list[str], workers: int, runner: BeamRunner | None = None) -> float:
    """One run over all IDs, as a backfill run: range tags, the three assets, the project's
    instance settings (dagster.yaml: SQLite). The DirectRunner unless ``runner`` is given."""
    args = ["--direct_running_mode=in_memory"] if workers == 1 else [
        f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    runner = runner or BeamRunner(pipeline_args=args)
    for asset in CHAIN:
        shutil.rmtree(os.path.join(root, asset), ignore_errors=True)
    with project_instance() as instance:
        instance.add_dynamic_partitions("media_ids", ids)
        started = time.perf_counter()
        result = dg.materialize(
            [build_media_assets(AUDIO_ASSETS)], selection=CHAIN, instance=instance,
            resources={"media_storage": LocalMediaStorage(root=root),
                       "beam_runner": runner},
            tags=partition_range_tags(ids[0], ids[-1]),
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
        elapsed = time.perf_counter() - started
    assert result.success
    return elapsed


def project_on_dask(root: str, ids: list[str], workers: int) -> float:
    """The project's run on a local dask.distributed cluster of single-threaded worker
    processes (BLAS threads too), warmed up first (numba compiles in each worker)."""
    with local_workers(workers) as address:  # the dev stack's worker pool
        runner = BeamRunner(runner="DaskRunner", dask=DaskSettings(client_address=address, npartitions=4 * workers))
        project_backfill(root, ids[:2 * workers], workers, runner)
        return project_backfill(root, ids, workers, runner)


def peak_memory_child(n: int) -> None:
    """Run in a child process: a backfill run over n short clips; print its peak RSS in MiB."""
    work = tempfile.mkdtemp(prefix="bench-mem-")
    ids = write_catalogue(os.path.join(work, "sources"), n, 3.0)
    project_backfill(work, ids, 1)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="clips for throughput (default 200)")
    parser.add_argument("--seconds", type=float, default=30.0, help="clip length (default 30)")
    parser.add_argument("--memory-n", type=int, default=1000, help="items for the memory run (default 1000)")
    parser.add_argument("--ingest-n", type=int, default=10_000, help="IDs published for (c) (default 10000)")
    parser.add_argument("--scale-n", type=int, default=100_000, help="registered IDs for (d) (default 100000)")
    parser.add_argument("--launch-n", type=int, default=10_000, help="IDs in the backfill of (d) (default 10000)")
    parser.add_argument("--no-stack", action="store_true", help="skip (c) and (d), which start a dagster dev stack")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    print(bytecode.summary())
    if args.memory_child:
        peak_memory_child(args.memory_child)
        return 0

    work = tempfile.mkdtemp(prefix="bench-")
    print(f"machine: {CORES} cores; N={args.n} clips of {args.seconds:g} s; work dir {work}", flush=True)
    ids = write_catalogue(os.path.join(work, "sources"), args.n, args.seconds)
    paths = sorted(os.path.join(work, "sources", f) for f in os.listdir(os.path.join(work, "sources")))
    process_file(paths[0])  # warm-up: numba compilation, caches

    rows = []
    for workers in sorted({1, CORES}):
        loop = plain_loop(paths, workers)
        writes = plain_loop(paths, workers, tempfile.mkdtemp(prefix="loop-out-", dir=work))
        bare = plain_beam(paths, workers)
        ours = project_backfill(work, ids, workers)
        rows.append((workers, loop, writes, bare, ours))
        print(f"  workers={workers}: loop {loop:.1f} s, loop that writes {writes:.1f} s, beam {bare:.1f} s, "
              f"project {ours:.1f} s", flush=True)
    on_dask = project_on_dask(work, ids, CORES) if CORES > 1 else None

    one_loop = plain_loop(paths[:1], 1)
    one_project = project_backfill(work, ids[:1], 1)
    memory = subprocess.run([sys.executable, __file__, "--memory-child", str(args.memory_n)],
                            capture_output=True, text=True, check=True)
    peak_mib = float(memory.stdout.strip().splitlines()[-1])
    shutil.rmtree(work, ignore_errors=True)
    scale = None
    if not args.no_stack:
        print("  ingestion and scale on a dagster dev stack ...", flush=True)
        scale = scale_bench.run(args.ingest_n, args.scale_n, args.launch_n)

    print()
    print("| measure | value | baseline | ratio | target |")
    print("| --- | --- | --- | --- | --- |")
    for workers, loop, writes, bare, ours in rows:
        n = args.n
        target = "(iii)/(i') <= 1.10, (iii)/(i) <= 1.25" if workers == 1 else ""
        print(f"| (a) items/s, {workers} worker(s): loop / loop that writes / plain Beam / project | "
              f"{n / loop:.2f} / {n / writes:.2f} / {n / bare:.2f} / {n / ours:.2f} | | "
              f"(iii)/(i') {ours / writes:.2f}, (iii)/(i) {ours / loop:.2f}, (iii)/(ii) {ours / bare:.2f} | "
              f"{target} |")
    _, _, writes_1, _, project_1 = rows[0]
    print(f"| (a) bookkeeping per media ID per asset, 1 worker: (project - loop that writes) / (N x {len(CHAIN)}) | "
          f"{(project_1 - writes_1) / (args.n * len(CHAIN)) * 1000:.2f} ms | | | <= 2 ms |")
    if CORES > 1:
        print(f"| (a) project items/s with {CORES} workers (DirectRunner multi_processing) vs 1 worker | "
              f"{args.n / rows[-1][4]:.2f} | {args.n / project_1:.2f} | {project_1 / rows[-1][4]:.2f} | >= 1.6 |")
        print(f"| (a) project items/s with {CORES} workers (DaskRunner, single-threaded workers) vs 1 worker | "
              f"{args.n / on_dask:.2f} | {args.n / project_1:.2f} | {project_1 / on_dask:.2f} | >= 1.6 |")
    print(f"| (b) fixed cost of one media ID beyond its compute | {one_project - one_loop:.2f} s | "
          f"compute {one_loop:.2f} s | | <= 3 s |")
    print(f"| (e) peak RSS of a backfill run over {args.memory_n} items | {peak_mib:.0f} MiB | | | <= 1536 MiB |")
    if scale is None:
        return 0
    print(f"| (c) ingestion of {args.ingest_n} published IDs until partitions in sensor runs | "
          f"{scale['ingest_s']:.1f} s | publishing alone {scale['publish_s']:.1f} s | | <= 30 s |")
    print(f"| (d) backfill launch of {args.launch_n} IDs ({scale['launch_runs']} runs), {scale['registered']} "
          f"registered | {scale['launch_s']:.1f} s | GraphQL call {scale['launch_call_s']:.2f} s | | <= 30 s |")
    print(f"| (d) sensor tick taking 100 new IDs, {scale['registered']} registered | {scale['tick_s']:.2f} s | | | |")
    print(f"| (d) partition page (GraphQL) of an asset with {scale['registered']} partitions | "
          f"{scale['partition_page_s']:.2f} s | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The trained-model asset's throughput: ``.venv/bin/python bench/model.py [--n 20] [--seconds 30]``.

N noisy 30 s clips (bench/records.py's) go through ``waveform -> note_events`` (Basic Pitch in
ONNX Runtime), on one core (BLAS, OpenMP and ONNX Runtime single-threaded), measured side by
side in this run:

(i)   a plain loop over the same two per-item functions, the model loaded once, nothing written;
(ii)  the project: one Dagster run over the N IDs on the DirectRunner with one worker, writing
      outputs and records; the model's load count comes from the run's summary (``model_loads``);
(iii) batching: the model's ms per 2 s window when one call gets 1 window, one clip's windows,
      or the windows of four clips (what cross-item batching, as Beam's RunInference does, would
      send).
"""

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_name] = "1"  # one core, before numpy and librosa load

import argparse  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import dagster as dg  # noqa: E402
import numpy as np  # noqa: E402
import records  # noqa: E402  (bench/records.py, beside this file)

from klio_assets import build_media_assets  # noqa: E402
from klio_assets.builtin.audio import WaveformConfig, waveform  # noqa: E402
from klio_assets.builtin.transcription import BasicPitch, NoteEventsConfig, note_events  # noqa: E402
from klio_core.media_store import LocalMediaStore  # noqa: E402
from klio_core.media_types import SourceMedia  # noqa: E402
from klio_dev import bytecode  # noqa: E402
from pipelines import worker_resources  # noqa: E402
from resources.beam import BeamRunner  # noqa: E402
from resources.dagster_tags import partition_range_tags  # noqa: E402
from resources.storage import LocalMediaStorage  # noqa: E402


def plain_loop(store: LocalMediaStore, ids: list[str], model: BasicPitch) -> float:
    started = time.perf_counter()
    for media_id in ids:
        wave = waveform.fn(SourceMedia(media_id, *store.read_source(media_id)), WaveformConfig())
        note_events.fn(wave, model, NoteEventsConfig())
    return time.perf_counter() - started


def project_run(root: str, ids: list[str]) -> tuple[float, dict]:
    """One run over ``ids`` (the two assets, one in-process worker); its time and summary."""
    shutil.rmtree(os.path.join(root, "waveform"), ignore_errors=True)
    shutil.rmtree(os.path.join(root, "note_events"), ignore_errors=True)
    worker_resources.release_all()  # the run loads the model itself
    with records.project_instance() as (_, instance):
        instance.add_dynamic_partitions("media_ids", ids)
        started = time.perf_counter()
        result = dg.materialize(
            [build_media_assets([waveform, note_events])], instance=instance,
            resources={"media_storage": LocalMediaStorage(root=root),
                       "beam_runner": BeamRunner(pipeline_args=["--direct_running_mode=in_memory"])},
            tags=partition_range_tags(ids[0], ids[-1]),
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
        elapsed = time.perf_counter() - started
        assert result.success
        [summary] = [r for r in instance.fetch_observations(dg.AssetKey("note_events"), limit=10).records
                     if r.partition_key is None]
        return elapsed, {k: v.value for k, v in summary.asset_observation.metadata.items()}


def ms_per_window(model: BasicPitch, windows: np.ndarray, batch: int, repeats: int = 2) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        for i in range(0, len(windows), batch):
            model.session.run(None, {"serving_default_input_2:0": windows[i:i + batch]})
    return (time.perf_counter() - started) / repeats / len(windows) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    print(bytecode.summary())
    with tempfile.TemporaryDirectory(prefix="bench-model-") as root:
        store = LocalMediaStore(root)
        ids = records.write_noisy_catalogue(store.source_location, "clip", args.n + 1, args.seconds)
        model = BasicPitch()
        plain_loop(store, ids[:1], model)  # warm-up: numba, caches
        ids = ids[1:]
        loop_s = plain_loop(store, ids, model)
        run_s, summary = project_run(root, ids)

        rng = np.random.default_rng(0)
        windows = rng.standard_normal((4 * 19, 43844, 1)).astype(np.float32) / 3  # 4 clips of 30 s
        per_window = {batch: ms_per_window(model, windows, batch) for batch in (1, 19, 76)}

    minutes = args.n * args.seconds / 60
    print(f"{args.n} noisy {args.seconds:g} s clips, one core\n")
    print("| measure | value |\n| --- | --- |")
    print(f"| (i) plain loop, waveform + note_events: items/s | {args.n / loop_s:.2f} |")
    print(f"| (ii) project run, 1 worker: items/s | {args.n / run_s:.2f} (ratio to (i): {run_s / loop_s:.2f}) |")
    print(f"| (ii) seconds of one core per minute of audio (project run) | {run_s / minutes:.2f} |")
    print(f"| (ii) model loads in the worker (run summary `model_loads`) | {summary.get('model_loads')} "
          f"for {summary.get('materialized')} items |")
    print("| (iii) model ms per 2 s window, 1 / 19 (one 30 s clip) / 76 (four) windows per call | "
          + " / ".join(f"{per_window[b]:.1f}" for b in (1, 19, 76)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What runs on a Beam worker needs no Dagster: a worker unpickles the DoFn of a real run (every
built-in asset, as the code location builds their tasks) and processes a media ID in an
interpreter where ``import dagster`` fails."""

import subprocess
import sys
import textwrap

import cloudpickle
import dagster as dg
import numpy as np
import soundfile

from klio_assets import media_asset
from klio_assets.definitions import MEDIA_ASSETS
from klio_core.media_store import LocalMediaStore
from klio_core.records import OutputRecord
from pipelines.transforms import ProcessItemFn

CHILD = textwrap.dedent("""
    import importlib.abc, json, sys

    class NoDagster(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "dagster" or name.startswith(("dagster.", "dagster_")):
                raise ImportError(f"{name} is not importable on this worker")

    sys.meta_path.insert(0, NoDagster())
    import cloudpickle

    with open(sys.argv[1], "rb") as f:
        fn = cloudpickle.load(f)
    fn.start_bundle()
    results = [out.value for out in fn.process("clip-1")]
    print(json.dumps({"statuses": sorted({str(r.status) for r in results}), "tasks": len(results),
                      "reasons": [r.reason for r in results if r.reason],
                      "dagster": sorted(m for m in sys.modules if m.split(".")[0].startswith("dagster"))}))
""")


def test_a_worker_unpickles_and_runs_a_real_task_with_dagster_unimportable(tmp_path):
    store = LocalMediaStore(str(tmp_path / "root"))
    (tmp_path / "root" / "sources").mkdir(parents=True)
    noise = 0.1 * np.random.default_rng(1).standard_normal(22050)
    soundfile.write(tmp_path / "root" / "sources" / "clip-1.wav", noise.astype(np.float32), 22050)
    tasks = [media.task(None, run_id="run-1") for media in MEDIA_ASSETS]
    pickled = tmp_path / "dofn.pkl"
    pickled.write_bytes(cloudpickle.dumps(ProcessItemFn(tasks, store)))

    result = subprocess.run([sys.executable, "-c", CHILD, str(pickled)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = __import__("json").loads(result.stdout.strip().splitlines()[-1])
    assert report == {"statuses": ["materialized"], "tasks": len(tasks), "reasons": [], "dagster": []}
    outputs = [o for t in tasks for o in t.outputs]
    assert all(store.exists(store.output_uri(o.asset, "clip-1", o.codec.suffix)) for o in outputs)
    records = [OutputRecord.from_json(store.read_bytes(store.record_uri(o.asset, "clip-1"))) for o in outputs]
    assert {r.run_id for r in records} == {"run-1"}


class GainConfig(dg.Config):
    gain: float = 2.0


@media_asset
def louder(waveform: np.ndarray, config: GainConfig) -> np.ndarray:
    return waveform * config.gain


def test_a_dagster_config_reaches_workers_as_plain_data():
    task = louder.task({"gain": 3.0})
    assert not isinstance(task.config, dg.Config) and task.config.gain == 3.0
    assert b"dagster" not in cloudpickle.dumps(task.config)
    assert task.config_json == GainConfig(gain=3.0).model_dump(mode="json")

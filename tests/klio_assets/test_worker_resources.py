"""Per-worker resources: ``@media_asset(setup=...)`` builds a value once per worker process."""

import os

import numpy as np
import pytest

from klio_assets import Waveform, build_media_assets, media_asset
from klio_assets.builtin.audio import waveform
from klio_core.media_store import LocalMediaStore
from pipelines import worker_resources
from pipelines.items import process_chain
from tests.conftest import materialize_ids, materialized_partitions


@pytest.fixture(autouse=True)
def fresh_worker():
    worker_resources.release_all()
    yield
    worker_resources.release_all()


class Model:
    """Stands in for a loaded model: counts its loads in a file, one line per load (with the pid)."""

    def __init__(self, log_path: str):
        self.closed = False
        with open(log_path, "a") as f:
            f.write(f"{os.getpid()}\n")

    def predict(self, samples: np.ndarray) -> np.ndarray:
        return np.array([np.abs(samples).mean()], dtype=np.float32)

    def close(self):
        self.closed = True


def loads(log_path) -> list[str]:
    return open(log_path).read().split() if os.path.exists(log_path) else []


def model_asset(log_path: str):
    @media_asset(setup={"model": lambda: Model(log_path)})
    def loudness_by_model(waveform: Waveform, model: Model) -> np.ndarray:
        return model.predict(waveform.samples)

    return loudness_by_model


def test_the_model_is_loaded_once_for_every_item_of_a_worker(instance, resources, store_root, catalogue_ids, tmp_path):
    log = str(tmp_path / "loads")
    assets = build_media_assets([waveform, model_asset(log)])
    assert materialize_ids([assets], catalogue_ids, instance, resources).success
    assert materialized_partitions(instance, "loudness_by_model") == set(catalogue_ids)
    assert loads(log) == [str(os.getpid())]  # one load for the four IDs, in this (the only) worker
    assert materialize_ids([assets], catalogue_ids, instance, resources, tags={"klio/force": "true"}).success
    assert len(loads(log)) == 1  # a later run in the same process reuses it


def test_nothing_is_loaded_when_every_id_is_skipped_or_dropped(store_root, catalogue_ids, tmp_path):
    log = str(tmp_path / "loads")
    task = model_asset(log).task(None)
    store = LocalMediaStore(store_root)
    [dropped] = process_chain([task], store, "no-such-id")
    assert dropped.status == "dropped" and loads(log) == []
    [made] = process_chain([waveform.task(None), task], store, catalogue_ids[0])[1:]
    assert made.status == "materialized" and len(loads(log)) == 1
    worker_resources.release_all()
    [skipped] = process_chain([task], store, catalogue_ids[0])
    assert skipped.status == "skipped" and len(loads(log)) == 1  # fresh: not loaded again


def test_values_are_closed_when_released(tmp_path):
    model = worker_resources.get("asset", "model", lambda: Model(str(tmp_path / "loads")))
    assert worker_resources.get("asset", "model", lambda: pytest.fail("built twice")) is model
    worker_resources.release_all()
    assert model.closed


def test_setup_must_name_a_parameter_and_give_a_function():
    with pytest.raises(TypeError, match="setup names parameters the function does not have: \\['model'\\]"):
        @media_asset(setup={"model": dict})
        def no_model(waveform: Waveform) -> np.ndarray:
            return waveform.samples

    with pytest.raises(TypeError, match="setup values must be functions of no arguments"):
        @media_asset(setup={"model": "weights.onnx"})
        def not_a_function(waveform: Waveform, model) -> np.ndarray:
            return waveform.samples

"""The public API: a per-item function becomes a media asset that runs as one Beam pipeline per run."""

import json
import os

import dagster as dg
import numpy as np
import pytest

from klio_assets import SourceMedia, Waveform, build_media_assets, media_asset
from klio_assets.builtin.audio import mel_spectrogram, waveform
from klio_core.codecs import WAVEFORM
from resources.beam import BeamRunner
from resources.storage import LocalMediaStorage
from tests.conftest import materialize_ids, materialized_partitions


# --- A researcher's new asset, in well under 15 lines -----------------------------------------------------
class GainConfig(dg.Config):
    db: float = 6.0


@media_asset
def louder(waveform: Waveform, config: GainConfig) -> Waveform:
    """The waveform with ``db`` decibels of gain."""
    return Waveform(waveform.samples * 10 ** (config.db / 20), waveform.sample_rate)


def test_a_new_asset_is_one_function_and_runs_for_two_ids(instance, resources, store_root, catalogue_ids):
    ids = catalogue_ids[:2]
    result = materialize_ids([build_media_assets([waveform, louder])], ids, instance, resources,
                             run_config={"ops": {"media_assets": {"config": {"louder": {"db": 20.0}}}}})
    assert result.success
    assert materialized_partitions(instance, "louder") == set(ids)
    for media_id in ids:
        base = WAVEFORM.decode(open(os.path.join(store_root, "waveform", media_id + ".wav"), "rb").read())
        loud = WAVEFORM.decode(open(os.path.join(store_root, "louder", media_id + ".wav"), "rb").read())
        np.testing.assert_allclose(loud.samples, base.samples * 10.0, rtol=1e-6)
        assert loud.sample_rate == base.sample_rate


# --- One pipeline per run ------------------------------------------------------------------
class RecordingBeamRunner(BeamRunner):
    """The real runner, which also appends one line per pipeline it runs to ``log_path``."""

    log_path: str

    def run(self, tasks, store, media_ids, run_id):
        with open(self.log_path, "a") as f:
            f.write(json.dumps({"tasks": [t.name for t in tasks], "ids": list(media_ids)}) + "\n")
        return super().run(tasks, store, media_ids, run_id)


def test_the_selected_assets_run_as_one_pipeline_over_all_ids(instance, store_root, catalogue_ids, tmp_path):
    log = tmp_path / "pipelines.jsonl"
    resources = {"media_storage": LocalMediaStorage(root=store_root),
                 "beam_runner": RecordingBeamRunner(log_path=str(log))}
    result = materialize_ids([build_media_assets([waveform, mel_spectrogram, louder])],
                             catalogue_ids, instance, resources, selection=["waveform", "mel_spectrogram"])
    assert result.success
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    assert runs == [{"tasks": ["waveform", "mel_spectrogram"], "ids": catalogue_ids}]
    assert materialized_partitions(instance, "louder") == set()


def test_inputs_can_be_renamed_with_ins(instance, resources, store_root, catalogue_ids):
    @media_asset(name="peak", ins={"audio": "waveform"})
    def peak_of(audio: Waveform) -> np.ndarray:
        return np.abs(audio.samples).max(keepdims=True)

    media_id = catalogue_ids[0]
    assert materialize_ids([build_media_assets([waveform, peak_of])], [media_id], instance, resources).success
    stored = np.load(os.path.join(store_root, "peak", media_id + ".npy"))
    assert 0.3 < stored[0] <= 0.51


def test_the_asset_graph_shows_each_media_asset_with_its_upstream():
    assets_def = build_media_assets([waveform, mel_spectrogram, louder])
    keys = {k.to_user_string() for k in assets_def.keys}
    assert keys == {"waveform", "mel_spectrogram", "louder"}
    deps = {k.to_user_string(): {d.to_user_string() for d in v}
            for k, v in assets_def.asset_deps.items()}
    assert deps == {"waveform": set(), "mel_spectrogram": {"waveform"}, "louder": {"waveform"}}
    assert assets_def.partitions_def.name == "media_ids"
    assert assets_def.backfill_policy.max_partitions_per_run == 500
    assert build_media_assets([waveform], max_ids_per_run=7).backfill_policy.max_partitions_per_run == 7
    assert assets_def.specs_by_key[dg.AssetKey("louder")].description == "The waveform with ``db`` decibels of gain."


def _no_return(waveform: Waveform):
    return waveform


def _bad_config(waveform: Waveform, config: dict) -> np.ndarray:
    return waveform.samples


def _unannotated(waveform) -> np.ndarray:
    return waveform


def _no_inputs() -> np.ndarray:
    return np.zeros(1)


def _list_output(source: SourceMedia) -> list:
    return []


@pytest.mark.parametrize(("fn", "kwargs", "message"), [
    (_no_return, {}, "annotate the return type"),
    (_bad_config, {}, "'config' must be annotated with a pydantic model"),
    (_unannotated, {}, "annotate parameter 'waveform'"),
    (_no_inputs, {}, "needs at least one input"),
    (_list_output, {}, "media values must be one of"),
    (_unannotated, {"ins": {"nope": "waveform"}}, "annotate parameter 'waveform'"),
])
def test_declaration_errors_name_the_asset_and_the_problem(fn, kwargs, message):
    with pytest.raises(TypeError, match=message) as error:
        media_asset(fn, **kwargs)
    assert f"media asset '{fn.__name__}'" in str(error.value)


def test_unknown_ins_and_graph_errors_are_reported():
    def f(waveform: Waveform) -> np.ndarray:
        return waveform.samples

    with pytest.raises(TypeError, match=r"ins names parameters the function does not have: \['nope'\]"):
        media_asset(f, ins={"nope": "x"})

    @media_asset(name="a", ins={"x": "b"})
    def a(x: np.ndarray) -> np.ndarray:
        return x

    @media_asset(name="b", ins={"x": "a"})
    def b(x: np.ndarray) -> np.ndarray:
        return x

    with pytest.raises(ValueError, match="cycle"):
        build_media_assets([a, b])
    with pytest.raises(ValueError, match="two media assets are named 'waveform'"):
        build_media_assets([waveform, waveform])


def test_stored_as_shows_the_escaped_name_files_use():
    from klio_assets.builtin.audio import mfcc
    from klio_assets.framework.assets import asset_specs

    [spec] = asset_specs(mfcc)
    assert spec.metadata["stored_as"].endswith("(media ID 'Track-1': %54rack-1.npy)")

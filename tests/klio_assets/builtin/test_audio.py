"""Built-in audio assets, materialized in-process against a temporary instance and compared with
what librosa computes directly on the same files."""

import logging
import os

import dagster as dg
import librosa
import numpy as np
import pytest

from klio_assets import build_media_assets
from klio_assets.builtin.audio import AUDIO_ASSETS
from klio_core.codecs import NDARRAY, WAVEFORM
from resources.beam import BeamRunner
from resources.storage import LocalMediaStorage
from tests.conftest import latest_metadata, materialize_ids, materialized_partitions, observations

MEDIA_ASSETS = build_media_assets(AUDIO_ASSETS)
FEATURES = ["waveform", "spectrogram", "mel_spectrogram", "mfcc"]
PLOTS = ["waveform_plot", "spectrogram_plot", "mel_spectrogram_plot", "mfcc_plot"]


def source_path(root: str, media_id: str) -> str:
    sources = os.path.join(root, "sources")
    return next(os.path.join(sources, f) for f in os.listdir(sources) if f.startswith(media_id + "."))


def expected_features(path: str, sr=22050, n_fft=2048, hop_length=512, n_mels=128, n_mfcc=20) -> dict:
    y, sr = librosa.load(path, sr=sr, mono=True)
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)
    return {
        "waveform": y,
        "spectrogram": np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop_length)),
        "mel_spectrogram": mel,
        "mfcc": librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=n_mfcc),
    }


def stored(root: str, asset: str, media_id: str) -> np.ndarray:
    if asset == "waveform":
        with open(os.path.join(root, "waveform", media_id + ".wav"), "rb") as f:
            return WAVEFORM.decode(f.read()).samples
    with open(os.path.join(root, asset, media_id + ".npy"), "rb") as f:
        return NDARRAY.decode(f.read())


def assert_matches_librosa(root: str, media_id: str, **params):
    expected = expected_features(source_path(root, media_id), **params)
    for asset, value in expected.items():
        np.testing.assert_allclose(stored(root, asset, media_id), value, rtol=1e-5, atol=1e-6,
                                   err_msg=f"{asset} [{media_id}]")


def test_one_partition_matches_librosa(instance, resources, store_root, catalogue_ids):
    media_id = catalogue_ids[0]
    instance.add_dynamic_partitions("media_ids", [media_id])
    result = dg.materialize([MEDIA_ASSETS], selection=FEATURES, partition_key=media_id,
                            instance=instance, resources=resources)
    assert result.success
    assert_matches_librosa(store_root, media_id)
    for asset in FEATURES:
        assert materialized_partitions(instance, asset) == {media_id}
    assert materialized_partitions(instance, "waveform_plot") == set()


def test_multi_partition_run_covers_every_format_and_asset(instance, resources, store_root, catalogue_ids):
    assert sorted(os.path.splitext(source_path(store_root, i))[1] for i in catalogue_ids) == [
        ".flac", ".mp3", ".ogg", ".wav"]
    result = materialize_ids([MEDIA_ASSETS], catalogue_ids, instance, resources)
    assert result.success
    for media_id in catalogue_ids:
        assert_matches_librosa(store_root, media_id)
    for asset in FEATURES + PLOTS:
        assert materialized_partitions(instance, asset) == set(catalogue_ids), asset


def test_partitions_report_duration_sample_rate_shape_and_plots(instance, store_root, catalogue_ids):
    media_id = catalogue_ids[1]
    resources = {"media_storage": LocalMediaStorage(root=store_root, media_url="http://127.0.0.1:3001/"),
                 "beam_runner": BeamRunner()}
    materialize_ids([MEDIA_ASSETS], [media_id], instance, resources)

    waveform = latest_metadata(instance, "waveform", media_id)
    assert waveform["duration_s"].value == pytest.approx(1.5, abs=0.01)
    assert waveform["sample_rate"].value == 22050
    assert waveform["shape"].value == f"({int(1.5 * 22050)},)"
    assert waveform["path"].value.endswith(f"waveform/{media_id}.wav")

    mel = latest_metadata(instance, "mel_spectrogram", media_id)
    assert mel["shape"].value == f"(128, {1 + int(1.5 * 22050) // 512})"
    assert mel["dtype"].value == "float32"

    for plot in PLOTS:
        meta = latest_metadata(instance, plot, media_id)
        # the UI shows the full-size plot from media storage; Dagster keeps only its link
        assert meta["plot"].value == f"![plot](http://127.0.0.1:3001/{plot}/{media_id}.png)"
        assert (meta["width"].value, meta["height"].value) == (640, 240)
        with open(meta["path"].value, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_parameters_are_run_config(instance, resources, store_root, catalogue_ids):
    media_id = catalogue_ids[2]
    params = {"sr": 16000, "n_fft": 1024, "hop_length": 256, "n_mels": 40, "n_mfcc": 13}
    config = {
        "waveform": {"sample_rate": 16000},
        "spectrogram": {"n_fft": 1024, "hop_length": 256},
        "mel_spectrogram": {"n_fft": 1024, "hop_length": 256, "n_mels": 40},
        "mfcc": {"n_mfcc": 13},
        "mfcc_plot": {"width_inches": 4.0, "height_inches": 2.0, "dpi": 50},
    }
    result = materialize_ids([MEDIA_ASSETS], [media_id], instance, resources,
                             selection=FEATURES + ["mfcc_plot"],
                             run_config={"ops": {"media_assets": {"config": config}}})
    assert result.success
    assert_matches_librosa(store_root, media_id, **params)
    assert stored(store_root, "mfcc", media_id).shape[0] == 13
    plot = latest_metadata(instance, "mfcc_plot", media_id)
    assert (plot["width"].value, plot["height"].value) == (200, 100)


def test_bad_items_are_reported_and_do_not_sink_the_others(instance, resources, store_root, catalogue_ids):
    with open(os.path.join(store_root, "sources", "corrupt-1.flac"), "wb") as f:
        f.write(b"fLaC" + os.urandom(2000))
    ids = [catalogue_ids[0], "corrupt-1", "missing-1", catalogue_ids[3]]
    result = materialize_ids([MEDIA_ASSETS], ids, instance, resources, selection=FEATURES,
                             raise_on_error=False)
    assert not result.success  # an item failed: the run says so, after the others were materialized
    failure = result.failure_data_for_node("media_assets").user_failure_data
    assert (failure.metadata["failed_media_ids"].value, failure.metadata["dropped_media_ids"].value) == (1, 1)
    assert failure.metadata["per_asset"].value["waveform"] == {"failed": 1, "dropped": 1}
    assert failure.metadata["per_asset"].value["mfcc"] == {"failed": 0, "dropped": 2}
    assert "1 media ID(s) failed and 1 more were dropped" in failure.description
    corrupt = failure.metadata["problems"].value["waveform [corrupt-1]"]
    assert "corrupt-1.flac (2,004 bytes) could not be decoded: tried soundfile" in corrupt
    assert "object at 0x" not in corrupt
    assert "source media not found" in failure.metadata["problems"].value["waveform [missing-1]"]
    good = {catalogue_ids[0], catalogue_ids[3]}
    for asset in FEATURES:
        assert materialized_partitions(instance, asset) == good, asset
    for media_id in good:
        assert_matches_librosa(store_root, media_id)

    reported = observations(instance, "waveform")
    assert reported["missing-1"]["status"] == "dropped"
    assert "source media not found" in reported["missing-1"]["reason"]
    assert reported["corrupt-1"]["status"] == "failed"
    assert "corrupt-1" not in materialized_partitions(instance, "waveform")
    downstream = observations(instance, "mfcc")
    assert set(downstream) == {"corrupt-1", "missing-1"}
    assert downstream["corrupt-1"]["reason"].startswith(
        "input 'mel_spectrogram' was not produced: 'waveform' failed in this pass (SourceDecodeError: source ")
    assert downstream["missing-1"]["reason"].startswith(
        "input 'mel_spectrogram' was not produced: 'waveform' was dropped in this pass (source media not found")
    assert not os.path.exists(os.path.join(store_root, "waveform", "corrupt-1.wav"))

    # the run's log: one error line per bad ID, naming where it went wrong, why, and what it left unmade
    errors = [e.message for e in instance.all_logs(result.run_id) if e.level == logging.ERROR and e.step_key]
    per_id = [m for m in errors if m.startswith("[")]
    assert len(per_id) == 2, per_id
    missing = next(m for m in per_id if m.startswith("[missing-1]"))
    assert missing.startswith(f"[missing-1] dropped in 'waveform': source media not found: no "
                              f"{os.path.join(store_root, 'sources', 'missing-1')} with any of the 12 source suffixes")
    assert missing.endswith("so not made either: spectrogram, mel_spectrogram, mfcc")


def test_a_run_where_nothing_materializes_fails_and_names_the_ids(instance, resources):
    result = materialize_ids([MEDIA_ASSETS], ["missing-2"], instance, resources,
                             selection=["waveform"], raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("media_assets").user_failure_data
    assert "no media ID was materialized" in failure.description
    assert "source media not found" in failure.metadata["problems"].value["waveform [missing-2]"]

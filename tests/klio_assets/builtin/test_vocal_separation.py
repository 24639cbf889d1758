import os

import librosa
import numpy as np

from klio_assets import build_media_assets
from klio_assets.builtin.audio import waveform
from klio_assets.builtin.vocal_separation import VOCAL_SEPARATION_ASSETS, SeparationConfig, separate
from tests.conftest import latest_metadata, materialize_ids, materialized_partitions

ASSETS = build_media_assets([waveform, *VOCAL_SEPARATION_ASSETS])


def test_separation_matches_the_method_run_directly(instance, resources, store_root, catalogue_ids):
    ids = catalogue_ids[:2]
    assert materialize_ids([ASSETS], ids, instance, resources).success
    for media_id in ids:
        stored = {a: np.load(os.path.join(store_root, a, media_id + ".npy"))
                  for a in ("foreground_spectrogram", "background_spectrogram")}
        y, sr = librosa.load(os.path.join(store_root, "waveform", media_id + ".wav"), sr=None)
        foreground, background = separate(y, sr, SeparationConfig())
        np.testing.assert_allclose(stored["foreground_spectrogram"], foreground, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stored["background_spectrogram"], background, rtol=1e-5, atol=1e-6)
        full = np.abs(librosa.stft(y))
        assert np.all(stored["foreground_spectrogram"] <= full + 1e-4)  # soft masks are in [0, 1]
        assert np.all(stored["background_spectrogram"] <= full + 1e-4)
        plot = latest_metadata(instance, "foreground_plot", media_id)
        assert (plot["width"].value, plot["height"].value) == (640, 240)
    for asset in ("foreground_spectrogram", "background_spectrogram", "foreground_plot", "background_plot"):
        assert materialized_partitions(instance, asset) == set(ids)


def test_one_function_two_outputs_writes_only_what_is_selected(instance, resources, store_root, catalogue_ids):
    media_id = catalogue_ids[0]
    assert {k.to_user_string() for k in ASSETS.keys} >= {"foreground_spectrogram", "background_spectrogram"}
    result = materialize_ids([ASSETS], [media_id], instance, resources,
                             selection=["waveform", "foreground_spectrogram"])
    assert result.success
    assert os.path.exists(os.path.join(store_root, "foreground_spectrogram", media_id + ".npy"))
    assert not os.path.exists(os.path.join(store_root, "background_spectrogram", media_id + ".npy"))
    assert materialized_partitions(instance, "background_spectrogram") == set()

import numpy as np
import pytest

from klio_assets.builtin.plots import plot_waveform
from klio_core.codecs import BYTES, NDARRAY, PNG, WAVEFORM, codec_for
from klio_core.media_types import PlotImage, SourceMedia, Waveform


def test_arrays_round_trip_exactly():
    value = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    decoded = NDARRAY.decode(NDARRAY.encode(value))
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, value)
    assert NDARRAY.describe(value) == {"shape": [3, 5], "dtype": "float32"}


def test_waveforms_keep_samples_and_sample_rate():
    samples = np.random.default_rng(1).uniform(-1, 1, 16000).astype(np.float32)
    decoded = WAVEFORM.decode(WAVEFORM.encode(Waveform(samples, 16000)))
    assert decoded.sample_rate == 16000
    np.testing.assert_array_equal(decoded.samples, samples)
    assert WAVEFORM.describe(decoded) == {"duration_s": 1.0, "sample_rate": 16000,
                                          "shape": [16000], "dtype": "float32"}


def test_png_describes_its_pixel_size():
    image = plot_waveform(np.zeros(100, dtype=np.float32), 100, "t", (4.0, 2.0), 50)
    described = PNG.describe(PNG.decode(PNG.encode(image)))
    assert described == {"width": 200, "height": 100}  # the image itself stays in media storage
    with pytest.raises(ValueError, match="PNG"):
        PNG.describe(PlotImage(b"not a png"))


@pytest.mark.parametrize(("annotation", "codec"),
                         [(np.ndarray, NDARRAY), (Waveform, WAVEFORM), (PlotImage, PNG), (bytes, BYTES)])
def test_codec_is_chosen_by_annotation(annotation, codec):
    assert codec_for(annotation, "x") is codec


@pytest.mark.parametrize("annotation", [list, dict[str, int], SourceMedia, None])
def test_unsupported_annotations_are_named_in_the_error(annotation):
    with pytest.raises(TypeError, match="my asset"):
        codec_for(annotation, "my asset")

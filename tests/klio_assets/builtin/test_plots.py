"""Plots: readable frames drawn once per worker, data painted per item."""

import io

import numpy as np
import pytest
from PIL import Image

from klio_assets.builtin import plots
from klio_assets.builtin.plots import nice_range, nice_seconds, plot_time_frequency, plot_waveform


def pixels(image) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image.png)).convert("RGB")).astype(int)


@pytest.mark.parametrize(("duration", "axis"), [(0.4, 1), (2.9, 3), (3.0, 3), (3.1, 4), (29.7, 30), (185, 240),
                                                (4000, 4200)])
def test_the_time_axis_is_the_next_nice_length(duration, axis):
    assert nice_seconds(duration) == axis


@pytest.mark.parametrize(("low", "high", "expected"), [(-612.3, 187.0, (-800, 200)), (0.02, 0.97, (0.0, 1.0)),
                                                       (-80, 0, (-80, 0)), (3.0, 3.0, (2.0, 4.0))])
def test_colour_ranges_are_rounded_outward(low, high, expected):
    assert nice_range(low, high) == expected


def test_a_time_frequency_plot_paints_loud_bins_bright_and_quiet_ones_dark():
    values = np.full((64, 100), -80.0, dtype=np.float32)
    values[32:] = 0.0  # upper half loud
    image = pixels(plot_time_frequency(values, 2.5, (0, 64), "band", "dB", "t", (8.0, 3.0), 80, value_range=(-80, 0)))
    assert image.shape == (240, 640, 3)
    _, box = plots._frame("t", "band", 3.0, (0.0, 64.0), (-80.0, 0.0), "dB", (8.0, 3.0), 80)
    left, top, right, bottom = box
    loud, quiet = image[top + 5, left + 5], image[bottom - 5, left + 5]
    assert loud.sum() > 600 and quiet.sum() < 30, (loud, quiet)  # magma's ends: near white, near black
    assert (image[top + 5, right - 3] == 255).all()  # 2.5 s of a 3 s axis: the rest stays blank


def test_a_waveform_is_drawn_as_its_envelope():
    silent = pixels(plot_waveform(np.zeros(22050, np.float32), 22050, "w", (8.0, 3.0), 80))
    loud = pixels(plot_waveform(np.sign(np.sin(np.arange(22050) / 5.0)).astype(np.float32), 22050, "w", (8.0, 3.0), 80))
    _, box = plots._frame("w", "amplitude", 1.0, (-1.0, 1.0), None, "", (8.0, 3.0), 80)
    left, top, right, bottom = box
    ink = np.array(plots.WAVEFORM_RGB)
    silent_rows = np.flatnonzero((silent[top:bottom, left + 10] == ink).all(axis=1))
    loud_rows = np.flatnonzero((loud[top:bottom, left + 10] == ink).all(axis=1))
    assert len(silent_rows) == 1 and abs(silent_rows[0] - (bottom - top) / 2) <= 1  # a line at 0
    assert loud_rows.min() == 0 and loud_rows.max() == bottom - top - 1  # full scale, -1 to 1


def test_frames_are_drawn_once_and_reused_for_every_item():
    plots._frame.cache_clear()
    for seed in range(5):
        values = np.random.default_rng(seed).standard_normal((20, 50)).astype(np.float32)
        plot_time_frequency(values, 2.0, (0, 20), "coefficient", "value", "MFCC", (8.0, 3.0), 80, value_range=(-5, 5))
    info = plots._frame.cache_info()
    assert (info.misses, info.hits) == (1, 4)

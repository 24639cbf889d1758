"""PNG plots of waveforms and time-frequency arrays, drawn in a few milliseconds each.

Matplotlib draws what is slow to draw and the same for many items: the frame (title, axes,
tick labels, the colour bar). Each frame is drawn once per worker process and kept
(``_frame``, a small cache). The data itself is painted into a copy of the frame with numpy: a
time-frequency array is resampled to the plot's pixels and coloured through the colour map's
table; a waveform is drawn as its min/max envelope per pixel column, as audio editors do.

So that frames repeat across items, the time axis runs to a "nice" length at or above the
clip's duration (3 s, 4 s, 5 s, 6 s, 8 s, 10 s, ...), with the data from 0 to its duration; and
a colour scale whose range is not given runs between rounded bounds. Frames differ only by plot
kind, size, labels and those rounded ranges.
"""

import functools
import io
import math

import numpy as np
from PIL import Image

from klio_assets import PlotImage

NICE_SECONDS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100, 120, 150, 180, 240, 300,
                360, 480, 600, 900, 1200, 1800, 2400, 3600)
WAVEFORM_RGB = (31, 119, 180)  # matplotlib's first line colour
COLOUR_MAP = "magma"
PNG_COMPRESS_LEVEL = 3  # zlib level: most of the size saving of the default 6, at half its time


def nice_seconds(duration_s: float) -> float:
    """The shortest time axis in ``NICE_SECONDS`` that holds ``duration_s`` (whole 10 minutes beyond)."""
    for length in NICE_SECONDS:
        if duration_s <= length:
            return float(length)
    return float(math.ceil(duration_s / 600) * 600)


def nice_range(low: float, high: float) -> tuple[float, float]:
    """``(low, high)`` widened to multiples of a round step (1, 2 or 5 times a power of ten)."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        centre = low if math.isfinite(low) else 0.0
        return (math.floor(centre) - 1.0, math.floor(centre) + 1.0)
    raw = (high - low) / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return (math.floor(low / step) * step, math.ceil(high / step) * step)


@functools.lru_cache(maxsize=64)
def _frame(title: str, ylabel: str, x_end: float, y_extent: tuple[float, float],
           colour_range: tuple[float, float] | None, colour_label: str, size: tuple[float, float],
           dpi: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The plot without its data, as RGB pixels, and the data area ``(left, top, right, bottom)``
    in pixels (right and bottom exclusive)."""
    # matplotlib is imported where frames are drawn, on the workers: a run process that only
    # builds and reports the pipeline (the DaskRunner's) need not pay its 0.4 s import
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    width, height = size
    fig = Figure(figsize=size, dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    # Fixed margins in inches, so labels fit whatever the size.
    left, right, bottom, top = 0.75 / width, (1.3 if colour_range else 0.25) / width, 0.5 / height, 0.3 / height
    ax = fig.add_axes((left, bottom, 1 - left - right, 1 - bottom - top))
    ax.set(title=title, xlabel="time (s)", ylabel=ylabel, xlim=(0.0, x_end), ylim=y_extent)
    if colour_range:
        cax = fig.add_axes((1 - right + 0.15 / width, bottom, 0.15 / width, 1 - bottom - top))
        fig.colorbar(ScalarMappable(Normalize(*colour_range), COLOUR_MAP), cax=cax, label=colour_label)
    canvas.draw()
    pixels = np.array(canvas.buffer_rgba())[..., :3]
    x0, y0, x1, y1 = ax.get_window_extent().extents
    rows = pixels.shape[0]
    box = (math.ceil(x0) + 1, rows - math.floor(y1) + 1, math.floor(x1) - 1, rows - math.ceil(y0) - 1)
    pixels.setflags(write=False)  # shared by every item: painted on copies only
    return pixels, box


@functools.lru_cache(maxsize=8)
def _colour_table(name: str) -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)


def _png(pixels: np.ndarray) -> PlotImage:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return PlotImage(buf.getvalue())


def _data_width(box: tuple[int, int, int, int], duration_s: float, x_end: float) -> int:
    return max(1, min(box[2] - box[0], round((box[2] - box[0]) * duration_s / x_end)))


def plot_waveform(samples: np.ndarray, sample_rate: int, title: str, size: tuple[float, float],
                  dpi: int) -> PlotImage:
    """Amplitude (-1 to 1) over time, as the min/max envelope of the samples per pixel column."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    duration_s = samples.size / sample_rate
    x_end = nice_seconds(duration_s)
    frame, box = _frame(title, "amplitude", x_end, (-1.0, 1.0), None, "", tuple(size), dpi)
    left, top, right, bottom = box
    columns, rows = _data_width(box, duration_s, x_end), bottom - top
    if samples.size == 0:
        samples = np.zeros(1, np.float32)
    columns = min(columns, samples.size)
    starts = np.linspace(0, samples.size, columns, endpoint=False).astype(np.int64)
    # Each column spans its samples and the last one before them, so the trace has no gaps.
    before = samples[np.maximum(starts - 1, 0)]
    low = np.minimum(np.minimum.reduceat(samples, starts), before)
    high = np.maximum(np.maximum.reduceat(samples, starts), before)
    to_row = lambda a: np.clip(np.round((1.0 - np.clip(a, -1, 1)) / 2 * (rows - 1)), 0, rows - 1)  # noqa: E731
    row = np.arange(rows)[:, None]
    ink = (row >= to_row(high)[None, :]) & (row <= to_row(low)[None, :])
    pixels = frame.copy()
    area = pixels[top:bottom, left:left + columns]
    area[ink] = WAVEFORM_RGB
    return _png(pixels)


def plot_time_frequency(values: np.ndarray, duration_s: float, y_extent: tuple[float, float],
                        ylabel: str, colorbar_label: str, title: str, size: tuple[float, float],
                        dpi: int, value_range: tuple[float, float] | None = None) -> PlotImage:
    """An image of a (bins, frames) array spanning ``duration_s`` seconds on the x axis, lowest
    bin at the bottom, coloured over ``value_range`` (default: the values' range, rounded)."""
    values = np.asarray(values, dtype=np.float32)
    if value_range is None:
        finite = values[np.isfinite(values)]
        value_range = nice_range(float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    x_end = nice_seconds(duration_s)
    frame, box = _frame(title, ylabel, x_end, tuple(map(float, y_extent)), tuple(map(float, value_range)),
                        colorbar_label, tuple(size), dpi)
    left, top, right, bottom = box
    columns, rows = _data_width(box, duration_s, x_end), bottom - top
    low, high = value_range
    scaled = np.nan_to_num((values - low) / (high - low), nan=0.0, posinf=1.0, neginf=0.0)
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(scaled[::-1])).resize(
        (columns, rows), Image.Resampling.BILINEAR))
    pixels = frame.copy()
    pixels[top:bottom, left:left + columns] = _colour_table(COLOUR_MAP)[
        np.clip(resized * 255, 0, 255).astype(np.uint8)]
    return _png(pixels)

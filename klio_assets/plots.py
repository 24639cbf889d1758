"""PNG rendering for waveforms and time-frequency arrays, with matplotlib's object API (no pyplot state)."""

import io

import numpy as np
from matplotlib.figure import Figure

from klio_assets.media_types import PlotImage


def _to_png(fig: Figure) -> PlotImage:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return PlotImage(buf.getvalue())


def plot_waveform(samples: np.ndarray, sample_rate: int, title: str, size: tuple[float, float],
                  dpi: int) -> PlotImage:
    fig = Figure(figsize=size, dpi=dpi, layout="constrained")
    ax = fig.subplots()
    ax.plot(np.arange(samples.shape[-1]) / sample_rate, samples, linewidth=0.5)
    ax.set(title=title, xlabel="time (s)", ylabel="amplitude", xlim=(0, samples.shape[-1] / sample_rate))
    return _to_png(fig)


def plot_time_frequency(values: np.ndarray, duration_s: float, y_extent: tuple[float, float],
                        ylabel: str, colorbar_label: str, title: str, size: tuple[float, float],
                        dpi: int) -> PlotImage:
    """An image of a (bins, frames) array spanning ``duration_s`` seconds on the x axis."""
    fig = Figure(figsize=size, dpi=dpi, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(values, origin="lower", aspect="auto", cmap="magma",
                      extent=(0.0, duration_s, *y_extent))
    ax.set(title=title, xlabel="time (s)", ylabel=ylabel)
    fig.colorbar(image, ax=ax, label=colorbar_label)
    return _to_png(fig)

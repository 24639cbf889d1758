"""A researcher's example, after Klio's audio-separation example: split a track's magnitude
spectrogram into a repeating background and a non-repeating foreground (vocals), with soft masks
from librosa's nearest-neighbour filter (the method of librosa's "vocal separation" gallery).

Written only with the public API: two per-item functions and two plots. ``separated_spectrograms``
is one function with two outputs, each its own asset.
"""

import librosa
import numpy as np
from pydantic import BaseModel, Field

from klio_assets import PlotImage, Waveform, media_asset, shape_and_dtype
from klio_assets.builtin.audio import DB_RANGE, PlotConfig
from klio_assets.builtin.plots import plot_time_frequency

GROUP = "vocal_separation"


class SeparationConfig(BaseModel):
    n_fft: int = Field(default=2048, gt=0, description="FFT window length in samples.")
    hop_length: int = Field(default=512, gt=0, description="Samples between frames.")
    similarity_window_s: float = Field(
        default=2.0, gt=0, description="Frames closer than this are not compared (librosa nn_filter width).")
    margin_background: float = Field(default=2.0, gt=0, description="Soft-mask margin for the background.")
    margin_foreground: float = Field(default=10.0, gt=0, description="Soft-mask margin for the foreground.")
    power: float = Field(default=2.0, gt=0, description="Soft-mask exponent.")


def separate(samples: np.ndarray, sample_rate: int, config: SeparationConfig) -> tuple[np.ndarray, np.ndarray]:
    """(foreground, background) magnitude spectrograms of ``samples``."""
    full = np.abs(librosa.stft(samples, n_fft=config.n_fft, hop_length=config.hop_length))
    frames = full.shape[1]
    width = int(librosa.time_to_frames(config.similarity_window_s, sr=sample_rate, hop_length=config.hop_length))
    width = max(1, min(width, (frames - 1) // 2 - 1))  # librosa needs width < (frames - 1) // 2
    repeating = np.minimum(full, librosa.decompose.nn_filter(
        full, aggregate=np.median, metric="cosine", width=width))
    background_mask = librosa.util.softmask(repeating, config.margin_background * (full - repeating),
                                            power=config.power)
    foreground_mask = librosa.util.softmask(full - repeating, config.margin_foreground * repeating,
                                            power=config.power)
    return foreground_mask * full, background_mask * full


BINS = shape_and_dtype(lambda c: ((1 + c.n_fft // 2, None), "float32"))


@media_asset(
    name="separated_spectrograms",
    outs={"foreground_spectrogram": np.ndarray, "background_spectrogram": np.ndarray},
    checks={"foreground_spectrogram": [BINS], "background_spectrogram": [BINS]},
    code_version="1", group_name=GROUP,
)
def separated_spectrograms(waveform: Waveform, config: SeparationConfig) -> dict:
    """Foreground (vocals) and background magnitude spectrograms, by nearest-neighbour soft masks."""
    foreground, background = separate(waveform.samples, waveform.sample_rate, config)
    return {"foreground_spectrogram": foreground, "background_spectrogram": background}


def _plot(spectrogram: np.ndarray, waveform: Waveform, title: str, config: PlotConfig) -> PlotImage:
    return plot_time_frequency(librosa.amplitude_to_db(spectrogram, ref=np.max), waveform.duration_s,
                               (0.0, waveform.sample_rate / 2), "frequency (Hz)", "dB", title,
                               config.size, config.dpi, value_range=DB_RANGE)


@media_asset(code_version="1", group_name=GROUP)
def foreground_plot(foreground_spectrogram: np.ndarray, waveform: Waveform, config: PlotConfig) -> PlotImage:
    """The separated foreground (vocals) in dB."""
    return _plot(foreground_spectrogram, waveform, "foreground", config)


@media_asset(code_version="1", group_name=GROUP)
def background_plot(background_spectrogram: np.ndarray, waveform: Waveform, config: PlotConfig) -> PlotImage:
    """The separated background in dB."""
    return _plot(background_spectrogram, waveform, "background", config)


VOCAL_SEPARATION_ASSETS = [separated_spectrograms, foreground_plot, background_plot]

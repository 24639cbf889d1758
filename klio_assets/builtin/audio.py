"""Built-in audio assets, at parity with Klio's ``klio_audio`` transforms.

Each is one per-item function on the public ``@media_asset`` API (what a researcher writes):

    source media -> waveform -> spectrogram (|STFT|)        -> spectrogram_plot
                             -> mel_spectrogram -> mfcc      -> mel_spectrogram_plot, mfcc_plot
                             -> waveform_plot

Klio counterparts: LoadAudio, GetSTFT, GetMelSpec, GetMFCC, SpecToPlot, MelSpecToPlot,
MFCCToPlot, WaveformToPlot. Defaults are librosa's. Every array output is checked per partition for
finite values (added by the framework) and for its shape and dtype; every plot for its pixel size.
"""

import librosa
import numpy as np
from pydantic import BaseModel, Field

from klio_assets import PlotImage, SourceMedia, Waveform, image_size, media_asset, shape_and_dtype
from klio_assets.builtin.decoding import decode_source
from klio_assets.builtin.plots import plot_time_frequency, plot_waveform


class WaveformConfig(BaseModel):
    sample_rate: int = Field(default=22050, gt=0, description="Resample the decoded audio to this rate (Hz).")
    accept_truncated: bool = Field(
        default=False, description="Keep the audio of a source that holds less than its header declares "
                                   "(by default such a file fails, naming both lengths).")


class StftConfig(BaseModel):
    n_fft: int = Field(default=2048, gt=0, description="FFT window length in samples.")
    hop_length: int = Field(default=512, gt=0, description="Samples between successive frames.")


class MelSpectrogramConfig(StftConfig):
    n_mels: int = Field(default=128, gt=0, description="Number of mel bands.")


class MfccConfig(BaseModel):
    n_mfcc: int = Field(default=20, gt=0, description="Number of MFCCs to return.")


class PlotConfig(BaseModel):
    width_inches: float = Field(default=8.0, gt=0, description="Figure width in inches.")
    height_inches: float = Field(default=3.0, gt=0, description="Figure height in inches.")
    dpi: int = Field(default=80, gt=0, description="Pixels per inch of the PNG.")

    @property
    def size(self) -> tuple[float, float]:
        return (self.width_inches, self.height_inches)


DB_RANGE = (-80.0, 0.0)
"""Decibels relative to the loudest bin: librosa's ``*_to_db(ref=np.max)`` keeps 80 dB (``top_db``)."""

PLOT_SIZE = image_size(lambda c: (round(c.width_inches * c.dpi), round(c.height_inches * c.dpi)))


@media_asset(code_version="1", checks=[shape_and_dtype(lambda c: ((None,), "float32"))])
def waveform(source: SourceMedia, config: WaveformConfig) -> Waveform:
    """The source media decoded to a mono float32 waveform at ``sample_rate`` Hz (any format soundfile or
    FFmpeg reads: WAV, AIFF, FLAC, Ogg, Opus, MP3, M4A/AAC, WebM, MP4 audio)."""
    return decode_source(source, config.sample_rate, config.accept_truncated)


@media_asset(code_version="1", checks=[shape_and_dtype(lambda c: ((1 + c.n_fft // 2, None), "float32"))])
def spectrogram(waveform: Waveform, config: StftConfig) -> np.ndarray:
    """STFT magnitude spectrogram, shape (1 + n_fft/2, frames)."""
    return np.abs(librosa.stft(waveform.samples, n_fft=config.n_fft, hop_length=config.hop_length))


@media_asset(code_version="1", checks=[shape_and_dtype(lambda c: ((c.n_mels, None), "float32"))])
def mel_spectrogram(waveform: Waveform, config: MelSpectrogramConfig) -> np.ndarray:
    """Mel power spectrogram, shape (n_mels, frames)."""
    return librosa.feature.melspectrogram(
        y=waveform.samples, sr=waveform.sample_rate, n_fft=config.n_fft,
        hop_length=config.hop_length, n_mels=config.n_mels)


@media_asset(code_version="1", checks=[shape_and_dtype(lambda c: ((c.n_mfcc, None), "float32"))])
def mfcc(mel_spectrogram: np.ndarray, config: MfccConfig) -> np.ndarray:
    """MFCCs of the log-power mel spectrogram, shape (n_mfcc, frames)."""
    return librosa.feature.mfcc(S=librosa.power_to_db(mel_spectrogram), n_mfcc=config.n_mfcc)


@media_asset(code_version="1", checks=[PLOT_SIZE])
def waveform_plot(waveform: Waveform, config: PlotConfig) -> PlotImage:
    """The waveform over time."""
    return plot_waveform(waveform.samples, waveform.sample_rate, "waveform", config.size, config.dpi)


@media_asset(code_version="1", checks=[PLOT_SIZE])
def spectrogram_plot(spectrogram: np.ndarray, waveform: Waveform, config: PlotConfig) -> PlotImage:
    """The magnitude spectrogram in dB, 0 Hz to Nyquist."""
    return plot_time_frequency(
        librosa.amplitude_to_db(spectrogram, ref=np.max), waveform.duration_s,
        (0.0, waveform.sample_rate / 2), "frequency (Hz)", "dB", "spectrogram", config.size, config.dpi,
        value_range=DB_RANGE)


@media_asset(code_version="1", checks=[PLOT_SIZE])
def mel_spectrogram_plot(mel_spectrogram: np.ndarray, waveform: Waveform, config: PlotConfig) -> PlotImage:
    """The mel spectrogram in dB by mel band."""
    return plot_time_frequency(
        librosa.power_to_db(mel_spectrogram, ref=np.max), waveform.duration_s,
        (0.0, float(mel_spectrogram.shape[0])), "mel band", "dB", "mel spectrogram",
        config.size, config.dpi, value_range=DB_RANGE)


@media_asset(code_version="1", checks=[PLOT_SIZE])
def mfcc_plot(mfcc: np.ndarray, waveform: Waveform, config: PlotConfig) -> PlotImage:
    """The MFCCs by coefficient."""
    return plot_time_frequency(
        mfcc, waveform.duration_s, (0.0, float(mfcc.shape[0])), "coefficient", "value", "MFCC",
        config.size, config.dpi)


AUDIO_ASSETS = [waveform, spectrogram, mel_spectrogram, mfcc,
                waveform_plot, spectrogram_plot, mel_spectrogram_plot, mfcc_plot]

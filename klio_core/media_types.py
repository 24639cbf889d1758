"""Values a per-item function receives and returns, besides plain ``numpy`` arrays and ``bytes``."""

from typing import NamedTuple

import numpy as np


class SourceMedia(NamedTuple):
    """A media ID's source file as found in storage (Klio's data input)."""

    media_id: str
    data: bytes
    suffix: str
    uri: str = ""  # where it was read from, for messages


class Waveform(NamedTuple):
    """Decoded audio: float32 samples (mono: shape ``(n,)``) and their sample rate in Hz."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return self.samples.shape[-1] / self.sample_rate


class PlotImage(NamedTuple):
    """An encoded PNG image. The UI shows it inline in the partition's metadata."""

    png: bytes

"""Per-item checks: each becomes a Dagster asset check evaluated for every materialized partition.

The framework adds ``finite_values`` to every array and waveform output. Authors attach more::

    @media_asset(checks=[shape_and_dtype(lambda config: ((config.n_mels, None), "float32"))])
    def mel_spectrogram(...) -> np.ndarray: ...

A check is ``ItemCheck(name, fn)`` where ``fn(value, config)`` returns a bool or ``(passed, detail)``.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from klio_core.codecs import png_size
from klio_core.media_types import PlotImage, Waveform


@dataclass(frozen=True)
class ItemCheck:
    """A check of one output value: ``fn(value, config)`` returns True/False or ``(passed, detail)``."""

    name: str
    fn: Callable[[Any, Any], bool | tuple[bool, str]]
    description: str = ""


def _array(value) -> np.ndarray:
    return value.samples if isinstance(value, Waveform) else np.asarray(value)


def _finite(value, config) -> tuple[bool, str]:
    bad = int(np.size(_array(value)) - np.count_nonzero(np.isfinite(_array(value))))
    return bad == 0, f"{bad} non-finite values" if bad else "all values finite"


def finite_values() -> ItemCheck:
    return ItemCheck("finite_values", _finite, "Every value is finite (no NaN or infinity).")


def shape_and_dtype(expected: Callable[[Any], tuple[Sequence[int | None], str]]) -> ItemCheck:
    """``expected(config)`` gives the shape (``None`` for any length) and the dtype name."""

    def check(value, config) -> tuple[bool, str]:
        shape, dtype = expected(config)
        array = _array(value)
        ok = (array.ndim == len(shape) and str(array.dtype) == dtype
              and all(want is None or want == got for want, got in zip(shape, array.shape, strict=True)))
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + f") {dtype}"
        return ok, f"got {tuple(array.shape)} {array.dtype}, want {want}"

    return ItemCheck("shape_and_dtype", check, "The array has the expected shape and dtype.")


def image_size(expected: Callable[[Any], tuple[int, int]]) -> ItemCheck:
    """``expected(config)`` gives the PNG's (width, height) in pixels."""

    def check(value: PlotImage, config) -> tuple[bool, str]:
        got, want = png_size(value.png), tuple(expected(config))
        return got == want, f"got {got[0]}x{got[1]} px, want {want[0]}x{want[1]}"

    return ItemCheck("image_size", check, "The PNG has the configured size.")

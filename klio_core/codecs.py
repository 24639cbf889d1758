"""How each kind of per-item value is stored, read back and described.

The codec is chosen from the per-item function's annotations, so an author never names a file
format: ``np.ndarray`` is stored as ``.npy``, ``Waveform`` as a float32 ``.wav`` (playable, and it
keeps its sample rate), ``PlotImage`` as ``.png``, a ``pandas.DataFrame`` (a small table such as
note events) as ``.csv`` and ``bytes`` as ``.bin``.
``describe`` returns JSON-safe metadata about one value; it runs on Beam workers.
"""

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import soundfile

from klio_core.media_types import PlotImage, SourceMedia, Waveform


@dataclass(frozen=True)
class Codec:
    suffix: str
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]
    describe: Callable[[Any], dict]


def _encode_array(value: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(value), allow_pickle=False)
    return buf.getvalue()


def _decode_array(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _describe_array(value: np.ndarray) -> dict:
    value = np.asarray(value)
    return {"shape": list(value.shape), "dtype": str(value.dtype)}


def _encode_waveform(value: Waveform) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, np.asarray(value.samples, dtype=np.float32).T, int(value.sample_rate),
                    format="WAV", subtype="FLOAT")
    return buf.getvalue()


def _decode_waveform(data: bytes) -> Waveform:
    samples, sample_rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=False)
    return Waveform(samples.T, int(sample_rate))


def _describe_waveform(value: Waveform) -> dict:
    return {
        "duration_s": round(value.duration_s, 3),
        "sample_rate": int(value.sample_rate),
        **_describe_array(value.samples),
    }


def png_size(png: bytes) -> tuple[int, int]:
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("PlotImage does not hold PNG data")
    return struct.unpack(">II", png[16:24])


def _describe_png(value: PlotImage) -> dict:
    width, height = png_size(value.png)
    return {"width": width, "height": height}


TABLE_PREVIEW_ROWS = 10


def _encode_table(value: pd.DataFrame) -> bytes:
    return value.to_csv(index=False).encode()


def _decode_table(data: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data)) if data.strip() else pd.DataFrame()


def _describe_table(value: pd.DataFrame) -> dict:
    """Its size, and its first rows as JSON records (the UI shows them as a table)."""
    head = value.head(TABLE_PREVIEW_ROWS)
    preview = [{k: v.item() if isinstance(v, np.generic) else v for k, v in row.items()}
               for row in head.to_dict(orient="records")]
    return {"rows": len(value), "columns": [str(c) for c in value.columns], "preview": preview}


NDARRAY = Codec(".npy", _encode_array, _decode_array, _describe_array)
WAVEFORM = Codec(".wav", _encode_waveform, _decode_waveform, _describe_waveform)
PNG = Codec(".png", lambda v: v.png, PlotImage, _describe_png)
TABLE = Codec(".csv", _encode_table, _decode_table, _describe_table)
BYTES = Codec(".bin", bytes, bytes, lambda v: {})

_BY_TYPE = {np.ndarray: NDARRAY, Waveform: WAVEFORM, PlotImage: PNG, pd.DataFrame: TABLE, bytes: BYTES}


def codec_for(annotation: Any, where: str) -> Codec:
    """The codec for a per-item value annotated ``annotation``; ``where`` names it in errors."""
    if annotation is SourceMedia:
        raise TypeError(f"{where}: SourceMedia is an input only; return an array, Waveform, "
                        "PlotImage, DataFrame or bytes")
    try:
        return _BY_TYPE[annotation]
    except (KeyError, TypeError):
        names = ", ".join(t.__name__ for t in _BY_TYPE)
        raise TypeError(f"{where} is annotated {annotation!r}; media values must be one of: {names}") from None

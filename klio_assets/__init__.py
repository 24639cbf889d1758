"""Klio-style media processing as Dagster assets partitioned by media ID: the public API, all a
researcher imports to add a media asset::

    from klio_assets import media_asset, Waveform

Importing it loads no Dagster: the decorator, the media types, codecs and checks are plain
Python that Beam workers load too. ``build_media_assets``, ``code_location`` and ``media_ids``
(the Dagster definitions) are loaded on first use.
"""

from typing import Any

from klio_assets.framework.media_asset import MediaAsset, media_asset
from klio_core.checks import ItemCheck, finite_values, image_size, shape_and_dtype
from klio_core.codecs import Codec, codec_for, png_size
from klio_core.media_ids import InvalidMediaId, validate_media_id
from klio_core.media_types import PlotImage, SourceMedia, Waveform

_DAGSTER_PARTS = {"build_media_assets": "klio_assets.framework.assets",
                  "code_location": "klio_assets.framework.location",
                  "media_ids": "klio_assets.framework.partitions"}

__all__ = [
    "Codec",
    "InvalidMediaId",
    "ItemCheck",
    "MediaAsset",
    "PlotImage",
    "SourceMedia",
    "Waveform",
    "build_media_assets",
    "code_location",
    "codec_for",
    "finite_values",
    "image_size",
    "media_asset",
    "media_ids",
    "png_size",
    "shape_and_dtype",
    "validate_media_id",
]


def __getattr__(name: str) -> Any:
    if name in _DAGSTER_PARTS:
        import importlib

        return getattr(importlib.import_module(_DAGSTER_PARTS[name]), name)
    raise AttributeError(f"module 'klio_assets' has no attribute {name!r}")

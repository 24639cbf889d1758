"""Klio-style media processing as Dagster assets partitioned by media ID.

The public API for adding a media asset::

    from klio_assets import media_asset, Waveform
"""

from klio_assets.media_asset import build_media_assets, media_asset
from klio_assets.media_types import PlotImage, SourceMedia, Waveform
from klio_core.media_ids import InvalidMediaId, validate_media_id
from klio_core.partitions import media_ids

__all__ = [
    "InvalidMediaId",
    "PlotImage",
    "SourceMedia",
    "Waveform",
    "build_media_assets",
    "media_asset",
    "media_ids",
    "validate_media_id",
]

"""The one partitions definition every media asset shares. What a media ID may be is defined once,
below every layer, in ``pipelines.media_ids`` (re-exported here)."""

import dagster as dg

from pipelines.media_ids import MAX_MEDIA_ID_LENGTH, InvalidMediaId, validate_media_id

media_ids = dg.DynamicPartitionsDefinition(name="media_ids")

__all__ = ["MAX_MEDIA_ID_LENGTH", "InvalidMediaId", "media_ids", "validate_media_id"]

"""The one Dagster partitions definition every media asset, job and sensor shares: a partition
per media ID (what a media ID may be is ``klio_core.media_ids``)."""

import dagster as dg

media_ids = dg.DynamicPartitionsDefinition(name="media_ids")

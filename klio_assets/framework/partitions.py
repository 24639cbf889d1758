"""The one Dagster partitions definition every media asset shares: a partition per media ID.

What a media ID may be, and the partitions' name (which the sensor, the commands and the
benches use without importing Dagster), are ``klio_core.media_ids``.
"""

import dagster as dg

from klio_core.media_ids import PARTITIONS_NAME

media_ids = dg.DynamicPartitionsDefinition(name=PARTITIONS_NAME)

"""Jobs over the media assets."""

import dagster as dg

from klio_assets.partitions import media_ids

media_job = dg.define_asset_job(
    name="media_job",
    selection=dg.AssetSelection.groups("media"),
    partitions_def=media_ids,
    description="Every media asset for the selected media IDs (Klio's top-down execution).",
)

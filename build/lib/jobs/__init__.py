"""Jobs over the media assets."""

from collections.abc import Iterable

import dagster as dg

from klio_core.partitions import media_ids


def build_media_job(media_assets: Iterable[str]):
    """``media_job``: the named media assets (every one of the code location) for the selected
    media IDs, as a top-down event runs them."""
    return dg.define_asset_job(
        name="media_job",
        selection=dg.AssetSelection.assets(*media_assets),
        partitions_def=media_ids,
        description="Every media asset for the selected media IDs (Klio's top-down execution).",
    )

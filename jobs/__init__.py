"""Jobs over the media assets."""

from collections.abc import Iterable

import dagster as dg


def build_media_job(media_assets: Iterable[str], name: str = "media_job"):
    """``media_job``: the named media assets (every one of the code location) for the selected
    media IDs, as a top-down event runs them. Its partitions are the assets' own (Dagster takes
    them from the selection)."""
    return dg.define_asset_job(
        name=name,
        selection=dg.AssetSelection.assets(*media_assets),
        description="Every media asset for the selected media IDs (Klio's top-down execution).",
    )

"""The code location: the single ``Definitions`` that ``workspace.yaml`` and ``dagster dev`` load.

Settings arrive from the environment here and nowhere else:

- ``KLIO_DATA_ROOT``: the storage root (default ``./data``); sources in ``<root>/sources``.
- ``KLIO_MAX_IDS_PER_RUN``: the most media IDs a backfill puts in one run (default 500).
"""

import os

import dagster as dg

from jobs import media_job
from klio_assets.audio import AUDIO_ASSETS
from klio_assets.media_asset import DEFAULT_MAX_IDS_PER_RUN, build_media_assets
from resources.beam import BeamRunner
from resources.storage import LocalMediaStorage

defs = dg.Definitions(
    assets=[build_media_assets(
        AUDIO_ASSETS,
        max_ids_per_run=int(os.environ.get("KLIO_MAX_IDS_PER_RUN", DEFAULT_MAX_IDS_PER_RUN)),
    )],
    jobs=[media_job],
    resources={
        "media_storage": LocalMediaStorage(root=os.path.abspath(os.environ.get("KLIO_DATA_ROOT", "data"))),
        "beam_runner": BeamRunner(),
    },
    # Media assets run as one step that hands the work to Beam; running it in the run's own
    # process saves a second Python start-up and import of librosa and Beam per run.
    executor=dg.in_process_executor,
)

"""The code location: the single ``Definitions`` that ``workspace.yaml`` and ``dagster dev`` load.

Settings arrive from the environment here and nowhere else:

- ``KLIO_DATA_ROOT``: the storage root (default ``./data``); sources in ``<root>/sources``.
"""

import os

import dagster as dg

from jobs import media_job
from klio_assets.audio import AUDIO_ASSETS
from klio_assets.media_asset import build_media_assets
from resources.beam import BeamRunner
from resources.storage import LocalMediaStorage

defs = dg.Definitions(
    assets=[build_media_assets(AUDIO_ASSETS)],
    jobs=[media_job],
    resources={
        "media_storage": LocalMediaStorage(root=os.path.abspath(os.environ.get("KLIO_DATA_ROOT", "data"))),
        "beam_runner": BeamRunner(),
    },
    # Beam already parallelises inside each step; running steps in the run's own process avoids
    # paying Python start-up and imports (librosa, Beam) once per asset.
    executor=dg.in_process_executor,
)

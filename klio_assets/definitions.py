"""The code location: the single ``Definitions`` that ``workspace.yaml`` and ``dagster dev`` load.

Its settings (storage root, Pub/Sub names, Beam runner, the cap on IDs per run) come from the
environment through ``klio_assets.settings.Settings``, which lists every variable. It announces
``waveform`` and ``note_events`` on its event output, for the code locations of other teams
built on them (``teams/``, README "Two teams").
"""

from klio_assets import code_location
from klio_assets.builtin import BUILTIN_ASSETS
from klio_assets.settings import Settings
from pipelines.graph import asset_graph

SETTINGS = Settings.from_env()
MEDIA_ASSETS = BUILTIN_ASSETS
MEDIA_GRAPH = asset_graph(MEDIA_ASSETS)  # its keys: "every media asset", for the job and events
MEDIA_STORAGE = SETTINGS.media_storage()
ANNOUNCED = ["waveform", "note_events"]

defs = code_location(MEDIA_ASSETS, announces=ANNOUNCED, settings=SETTINGS)

"""The code locations ``test_staleness.py`` asks Dagster's GraphQL API about: the audio chain
``waveform -> mel_spectrogram -> mfcc`` as built in, and with a new code version of ``mfcc``."""

import dagster as dg

from klio_assets import build_media_assets, media_asset
from klio_assets.builtin.audio import AUDIO_ASSETS
from resources.beam import BeamRunner
from resources.pubsub import PubSubResource
from resources.storage import LocalMediaStorage

CHAIN = ["waveform", "mel_spectrogram", "mfcc"]
AS_BUILT_IN = [next(a for a in AUDIO_ASSETS if a.name == name) for name in CHAIN]
MFCC_BUMPED = [*AS_BUILT_IN[:2], media_asset(AS_BUILT_IN[2].fn, code_version="2")]

RESOURCES = {"media_storage": LocalMediaStorage(root="unused"), "beam_runner": BeamRunner(),
             "pubsub": PubSubResource(project="unused")}  # nothing runs here: the test only asks

defs = dg.Definitions(assets=[build_media_assets(AS_BUILT_IN)], resources=RESOURCES)
bumped = dg.Definitions(assets=[build_media_assets(MFCC_BUMPED)], resources=RESOURCES)

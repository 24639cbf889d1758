"""The built-in media assets, at parity with Klio's audio transforms and beyond. Each module is
written only against the public API (``klio_assets``), exactly as a researcher's asset would be:
``tests/test_layers.py`` checks it."""

from klio_assets.builtin.audio import AUDIO_ASSETS
from klio_assets.builtin.transcription import TRANSCRIPTION_ASSETS
from klio_assets.builtin.vocal_separation import VOCAL_SEPARATION_ASSETS

BUILTIN_ASSETS = AUDIO_ASSETS + VOCAL_SEPARATION_ASSETS + TRANSCRIPTION_ASSETS

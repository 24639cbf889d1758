"""Mistakes in a media asset fail when the code location loads, naming the function, the
parameter and what was meant, rather than at run time (or as a phantom asset in the graph)."""

import os
import subprocess
import sys
import textwrap

import dagster as dg
import numpy as np
import pydantic
import pytest

from klio_assets import Waveform, build_media_assets, media_asset
from klio_assets.builtin.audio import waveform

TYPO_LOCATION = """
    import dagster as dg
    import numpy as np

    from klio_assets import build_media_assets, media_asset
    from klio_assets.builtin import BUILTIN_ASSETS


    @media_asset
    def spectral_centroid(spectrogramm: np.ndarray) -> np.ndarray:
        return spectrogramm.mean(axis=0)


    defs = dg.Definitions(assets=[build_media_assets([*BUILTIN_ASSETS, spectral_centroid])])
"""


def test_a_typo_in_an_upstream_parameter_fails_the_code_location_naming_the_closest_assets(tmp_path):
    location = tmp_path / "typo_location.py"
    location.write_text(textwrap.dedent(TYPO_LOCATION))
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "dagster"), "definitions", "validate",
                           "-f", str(location)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DAGSTER_HOME": str(tmp_path)})
    assert done.returncode != 0
    assert ("media asset 'spectral_centroid': parameter 'spectrogramm' names no media asset "
            "(did you mean 'spectrogram'") in done.stdout + done.stderr


def test_an_upstream_from_another_code_location_is_named_so():
    @media_asset
    def tempo(waveform: Waveform) -> np.ndarray:
        return waveform.samples[:1]

    assets = build_media_assets([tempo], from_other_locations=["waveform"])
    assert dg.AssetKey("waveform") in {dep.asset_key for spec in assets.specs for dep in spec.deps}
    with pytest.raises(TypeError, match="parameter 'waveform' names no media asset"):
        build_media_assets([tempo])


def test_a_config_default_that_does_not_fit_its_type_names_the_field():
    class Loudness(pydantic.BaseModel):
        window: int = "long"  # type: ignore[assignment]

    @media_asset
    def loudness(waveform: Waveform, config: Loudness) -> np.ndarray:
        return waveform.samples[:1]

    with pytest.raises(TypeError, match="media asset 'loudness' config field 'window': its default 'long' is not a"):
        build_media_assets([waveform, loudness])


"""Dagster's records stay small per media ID on realistic (noisy) audio. A size, never a time."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench"))

import records

from klio_assets.definitions import defs

GENEROUS_BOUND_KB = 512  # measured 260-310 kB; plots inlined as base64 PNG made it 2,900-4,100 kB


@pytest.mark.slow
def test_dagster_home_grows_by_a_bounded_size_per_media_id():
    per_id, events, retained_per_id, retained_events = records.measure(n=4, seconds=10.0)
    assert per_id / 1024 <= GENEROUS_BOUND_KB, events
    materializations, size = events["ASSET_MATERIALIZATION"]
    assets = len(defs.resolve_asset_graph().get_all_asset_keys())
    assert materializations == 4 * assets * 2  # every asset of every ID, in the run's shard and the index
    assert size / materializations < 4096  # a lean event: no image inside
    # once the run is past its retention age: its materializations stay, its planned events go
    assert retained_events["ASSET_MATERIALIZATION"] == events["ASSET_MATERIALIZATION"]
    assert "ASSET_MATERIALIZATION_PLANNED" not in retained_events and "log message" not in retained_events
    assert retained_per_id < per_id, (retained_per_id, per_id)

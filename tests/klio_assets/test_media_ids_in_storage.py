"""IDs as users have them, end to end: found where Klio's data input finds them, stored under the
one escaping rule, never sharing or blocking an output, nothing written outside the root."""

import os
import shutil

import dagster as dg
import pytest

from klio_assets import build_media_assets
from klio_assets.builtin.audio import AUDIO_ASSETS, mel_spectrogram, mfcc, waveform
from klio_core.media_ids import media_id_from_storage_name, storage_name
from resources.beam import BeamRunner
from resources.storage import LocalMediaStorage
from tests.conftest import materialize_ids, materialized_partitions

IDS = ["spotify:track:4uLU6hMCjMI75M1A2tKUQC", "a/b/c", "Track", "track", "a", "a/b", "tr\u00e4ck 1"]
ASSETS = ("waveform", "mel_spectrogram", "mfcc")


def place_sources(source_dir: str, clip: str, ids) -> None:
    for media_id in ids:  # <location>/<media_id><suffix>: a '/' names a nested folder
        path = os.path.join(source_dir, *media_id.split("/")) + os.path.splitext(clip)[1]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copy(clip, path)


def test_ids_as_users_have_them_materialize_apart_and_inside_the_root(tmp_path, instance, catalogue_sources):
    source_dir, catalogue_ids = catalogue_sources
    clip = os.path.join(source_dir, next(n for n in os.listdir(source_dir) if n.startswith(catalogue_ids[0])))
    root = tmp_path / "store"
    place_sources(str(root / "sources"), clip, IDS)

    result = materialize_ids([build_media_assets([waveform, mel_spectrogram, mfcc])], IDS, instance,
                             {"media_storage": LocalMediaStorage(root=str(root)), "beam_runner": BeamRunner()})
    assert result.success
    for asset in ASSETS:
        assert materialized_partitions(instance, asset) == set(IDS), asset
        suffix = ".wav" if asset == "waveform" else ".npy"
        stored = {os.path.relpath(os.path.join(folder, name), root / asset)[:-len(suffix)]
                  for folder, _, names in os.walk(root / asset) if ".klio" not in folder.split(os.sep)
                  for name in names if name.endswith(suffix)}
        assert {media_id_from_storage_name(n) for n in stored} == set(IDS), asset
        assert stored == {storage_name(i) for i in IDS}
    written = [os.path.join(folder, name) for folder, _, names in os.walk(tmp_path) for name in names]
    assert all(path.startswith(str(root) + os.sep) for path in written)
    metadata = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("mfcc"), asset_partitions=["Track"]), limit=1).records
    assert metadata[0].asset_materialization.metadata["path"].value == str(root / "mfcc" / "%54rack.npy")


@pytest.mark.parametrize("media_id", ["a/../../../escape", "a//b", "a...b"])
def test_ids_that_could_leave_the_root_or_confuse_dagster_are_refused_where_they_enter(tmp_path, media_id):
    """By the sensor (an event) and by a worker (a partition key that reached a run): every
    storage path is derived from an ID checked at one of these edges."""
    from klio_core.wire import BadEvent, parse_event
    from pipelines.items import process_chain

    assert isinstance(parse_event(media_id.encode(), {"mfcc"}), BadEvent)
    results = process_chain([a.task(None) for a in AUDIO_ASSETS], LocalMediaStorage(root=str(tmp_path)).store(),
                            media_id)
    assert {r.status for r in results} == {"failed"} and all("media ID" in r.reason for r in results)
    assert list(tmp_path.iterdir()) == []

"""The GCS store against a GCS API emulator: the same interface and layout as the local store."""

import os

import librosa
import numpy as np
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from klio_assets import build_media_assets
from klio_assets.builtin.audio import mel_spectrogram, mfcc, waveform
from klio_core.codecs import NDARRAY
from klio_core.media_store import GCSMediaStore
from resources.beam import BeamRunner
from resources.storage import GCSMediaStorage
from tests.conftest import GCS_BUCKET, materialize_ids, materialized_partitions

BUCKET = GCS_BUCKET


@pytest.fixture
def store(gcs_emulator, monkeypatch, request) -> GCSMediaStore:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    return GCSMediaStore(f"gs://{BUCKET}/{request.node.name}")


def test_layout_matches_the_local_store(store):
    root = store.root
    assert store.output_uri("mfcc", "track-1", ".npy") == f"{root}/mfcc/track-1.npy"
    assert store.record_uri("mfcc", "track-1") == f"{root}/mfcc/.klio/track-1.json"
    assert store.source_candidates("track-1")[0] == f"{root}/sources/track-1.wav"
    assert store.scratch_uri("r1", "mfcc") == f"{root}/_runs/r1/mfcc"
    with pytest.raises(ValueError, match="gs://bucket"):
        GCSMediaStore("/local/path")


def test_objects_round_trip_and_list_without_hidden_records(store):
    uri = store.output_uri("a", "x", ".bin")
    assert not store.exists(uri)
    store.write_bytes(uri, b"first")
    store.write_bytes(uri, b"second")
    store.write_bytes(store.record_uri("a", "x"), b"{}")
    store.write_bytes(store.output_uri("a", "y", ".bin"), b"y")
    assert store.read_bytes(uri) == b"second"
    assert store.list_uris(f"{store.root}/a") == [uri, store.output_uri("a", "y", ".bin")]


def test_find_source_tries_suffixes_in_order(store):
    store.write_bytes(f"{store.source_location}/t1.mp3", b"mp3")
    store.write_bytes(f"{store.source_location}/t1.flac", b"flac")
    assert store.find_source("t1") == f"{store.source_location}/t1.flac"
    assert store.find_source("t2") is None


def test_a_failed_upload_leaves_the_previous_object_whole(store, monkeypatch):
    uri = store.output_uri("a", "x", ".bin")
    store.write_bytes(uri, b"old and complete")

    def broken_upload(self, data, *args, **kwargs):
        raise ConnectionError("connection reset during upload")

    monkeypatch.setattr(storage.Blob, "upload_from_string", broken_upload)
    with pytest.raises(ConnectionError):
        store.write_bytes(uri, b"new" * 1000)
    monkeypatch.undo()
    assert store.read_bytes(uri) == b"old and complete"


def test_assets_materialize_on_gcs_like_on_local_disk(gcs_emulator, monkeypatch, instance, catalogue_sources):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    source_dir, ids = catalogue_sources
    ids = ids[:2]
    resource = GCSMediaStorage(root=f"gs://{BUCKET}/e2e")
    store = resource.store()
    for name in os.listdir(source_dir):
        if name.split(".")[0] in ids:
            with open(os.path.join(source_dir, name), "rb") as f:
                store.write_bytes(f"{store.source_location}/{name}", f.read())

    result = materialize_ids([build_media_assets([waveform, mel_spectrogram, mfcc])], ids, instance,
                             {"media_storage": resource, "beam_runner": BeamRunner()})
    assert result.success
    for media_id in ids:
        path = next(os.path.join(source_dir, n) for n in os.listdir(source_dir) if n.startswith(media_id + "."))
        y, sr = librosa.load(path, sr=22050, mono=True)
        expected = librosa.feature.mfcc(S=librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr)), n_mfcc=20)
        stored = NDARRAY.decode(store.read_bytes(store.output_uri("mfcc", media_id, ".npy")))
        np.testing.assert_allclose(stored, expected, rtol=1e-5, atol=1e-6)
        assert store.exists(store.record_uri("mfcc", media_id))
    assert materialized_partitions(instance, "mfcc") == set(ids)  # so the results sink on gs:// worked


def test_ids_as_users_have_them_on_gcs(gcs_emulator, monkeypatch, instance, catalogue_sources):
    from klio_core.media_ids import storage_name

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    source_dir, catalogue_ids = catalogue_sources
    name = next(n for n in os.listdir(source_dir) if n.startswith(catalogue_ids[0]))
    ids = ["spotify:track:x", "a", "a/b", "Track", "track"]
    resource = GCSMediaStorage(root=f"gs://{BUCKET}/ids")
    store = resource.store()
    client = storage.Client(project="emulator", credentials=AnonymousCredentials())
    before = {b.name for b in client.list_blobs(BUCKET)}
    with open(os.path.join(source_dir, name), "rb") as f:
        data = f.read()
    for media_id in ids:  # gs://.../sources/<media_id><suffix>, '/' naming a nested prefix
        store.write_bytes(f"{store.source_location}/{media_id}{os.path.splitext(name)[1]}", data)

    result = materialize_ids([build_media_assets([waveform])], ids, instance,
                             {"media_storage": resource, "beam_runner": BeamRunner()})
    assert result.success
    assert materialized_partitions(instance, "waveform") == set(ids)
    objects = {b.name for b in client.list_blobs(BUCKET, prefix="ids/waveform/") if "/.klio/" not in b.name}
    assert objects == {f"ids/waveform/{storage_name(i)}.wav" for i in ids}
    new = {b.name for b in client.list_blobs(BUCKET)} - before
    assert new and all(name.startswith("ids/") for name in new), sorted(new)[:10]

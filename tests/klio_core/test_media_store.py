import os
import re

import pytest

from klio_core.codecs import BYTES
from klio_core.media_ids import InvalidMediaId, validate_media_id
from klio_core.media_store import DEFAULT_SOURCE_SUFFIXES, LocalMediaStore
from klio_core.records import ItemStatus
from pipelines.items import process_chain
from pipelines.specs import ItemInput, ItemOutput, ItemTask
from resources.storage import LocalMediaStorage


def test_layout_follows_klio_data_locations(tmp_path):
    store = LocalMediaStore(str(tmp_path))
    assert store.output_uri("mfcc", "track-1", ".npy") == f"{tmp_path}/mfcc/track-1.npy"
    assert store.source_candidates("track-1") == [
        f"{tmp_path}/sources/track-1{s}" for s in DEFAULT_SOURCE_SUFFIXES]
    assert store.scratch_uri("run1", "mfcc") == f"{tmp_path}/_runs/run1/mfcc"


@pytest.mark.parametrize("bad_id", ["../x", "", "a//b", "a/../../b"])
def test_a_worker_refuses_an_invalid_id_before_deriving_any_path(tmp_path, bad_id):
    """The store derives paths without checking (the ID was checked where it entered); a
    worker's pass checks it once, and touches nothing for an invalid one."""
    store = LocalMediaStore(str(tmp_path))
    task = ItemTask("copy", lambda source: source.data, (ItemInput("source", None),), (ItemOutput("copy", BYTES),))
    [result] = process_chain([task], store, bad_id)
    assert (result.status, result.task) == (ItemStatus.FAILED, "copy")
    with pytest.raises(InvalidMediaId, match=re.escape(result.reason)):
        validate_media_id(bad_id)
    assert list(tmp_path.iterdir()) == []


def test_find_source_tries_suffixes_in_configured_order(tmp_path):
    sources = tmp_path / "media"
    sources.mkdir()
    (sources / "t1.mp3").write_bytes(b"mp3")
    (sources / "t1.flac").write_bytes(b"flac")
    store = LocalMediaStore(str(tmp_path), str(sources), [".wav", ".flac", ".mp3"])
    assert store.find_source("t1") == f"{sources}/t1.flac"
    assert LocalMediaStore(str(tmp_path), str(sources), [".mp3", ".flac"]).find_source("t1") == f"{sources}/t1.mp3"
    assert store.find_source("t2") is None


def test_write_replaces_whole_object_and_leaves_no_temp_files(tmp_path):
    store = LocalMediaStore(str(tmp_path))
    uri = store.output_uri("a", "x", ".bin")
    store.write_bytes(uri, b"first")
    store.write_bytes(uri, b"second")
    assert store.read_bytes(uri) == b"second"
    assert os.listdir(tmp_path / "a") == ["x.bin"]


@pytest.mark.parametrize("failing_call", ["fsync", "replace"])
def test_a_crash_during_write_never_leaves_a_partial_object(tmp_path, monkeypatch, failing_call):
    store = LocalMediaStore(str(tmp_path))
    uri = store.output_uri("a", "x", ".bin")
    store.write_bytes(uri, b"old and complete")

    def crash(*args, **kwargs):
        raise OSError("disk went away")

    monkeypatch.setattr(os, failing_call, crash)
    with pytest.raises(OSError, match="disk went away"):
        store.write_bytes(uri, b"new" * 1000)
    monkeypatch.undo()
    assert store.read_bytes(uri) == b"old and complete"
    assert os.listdir(tmp_path / "a") == ["x.bin"]
    fresh = store.output_uri("a", "never-written", ".bin")
    monkeypatch.setattr(os, failing_call, crash)
    with pytest.raises(OSError):
        store.write_bytes(fresh, b"data")
    monkeypatch.undo()
    assert not store.exists(fresh)


def test_resource_defaults_sources_under_root(tmp_path):
    store = LocalMediaStorage(root=str(tmp_path)).store()
    assert store.source_location == f"{tmp_path}/sources"
    assert store.source_suffixes[:5] == (".wav", ".flac", ".ogg", ".oga", ".opus")
    assert {".m4a", ".aac", ".aiff", ".webm", ".mp4"} <= set(store.source_suffixes)
    with pytest.raises(ValueError, match="source_suffixes"):
        LocalMediaStorage(root=str(tmp_path), source_suffixes=[]).store()


def test_source_suffixes_setting_is_parsed_and_a_bad_one_names_itself():
    from klio_core.media_store import parse_suffixes
    assert parse_suffixes(" .oga, .m4a ,") == [".oga", ".m4a"]
    for bad in ("", "wav", ".wav,mp3", "./x"):
        with pytest.raises(ValueError, match="KLIO_SOURCE_SUFFIXES"):
            parse_suffixes(bad)


def test_an_oga_source_is_found_by_the_default_suffixes(tmp_path):
    store = LocalMediaStorage(root=str(tmp_path)).store()
    os.makedirs(tmp_path / "sources")
    (tmp_path / "sources" / "bell.oga").write_bytes(b"OggS")
    assert store.find_source("bell") == f"{tmp_path}/sources/bell.oga"

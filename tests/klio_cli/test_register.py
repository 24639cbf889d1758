"""klio-register: a catalogue's sources (a folder, a gs:// prefix) or a file of IDs become partitions."""

import os

import dagster as dg
import pytest

from klio_cli.register import main, plan

COUNT = 10_000


def test_plan_sorts_ids_into_new_known_and_rejected_once_each():
    found = plan(["b", "a", "b", "known", "x...y", "a/../z", "c"], registered=["known", "old"])
    assert found.new == ["b", "a", "c"]
    assert found.known == 1
    assert set(found.rejected) == {"x...y", "a/../z"}
    assert "partition range" in found.rejected["x...y"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KLIO_DATA_ROOT", str(tmp_path / "data"))  # sources in data/sources
    os.makedirs(tmp_path / "home")
    return tmp_path / "home"


def registered() -> list[str]:
    with dg.DagsterInstance.get() as instance:
        return instance.get_dynamic_partitions("media_ids")


def catalogue_folder(root) -> set[str]:
    """10,000 sources in 100 label folders, plus files that are not sources or not valid IDs."""
    expected = set()
    for label in range(100):
        folder = root / f"label-{label:02d}" / "2024"
        folder.mkdir(parents=True)
        for track in range(100):
            suffix = (".wav", ".flac", ".oga", ".m4a")[track % 4]
            (folder / f"Track {track:02d}{suffix}").write_bytes(b"")
            expected.add(f"label-{label:02d}/2024/Track {track:02d}")
    (root / "label-00" / "2024" / "Track 00.mp3").write_bytes(b"")  # a second format of one ID: once
    (root / "notes.txt").write_bytes(b"")  # not a source suffix
    (root / ".hidden.wav").write_bytes(b"")  # hidden
    (root / "bad...name.wav").write_bytes(b"")  # rejected: '...'
    return expected


def test_a_folder_of_10000_sources_registers_in_batches_once(tmp_path, home, capsys):
    sources = tmp_path / "data" / "sources"
    expected = catalogue_folder(sources)
    assert main(["--from", str(sources), "--batch", "3000"]) == 0
    out = capsys.readouterr().out
    assert f"{COUNT} added, 0 already known, 1 rejected" in out
    assert "rejected 'bad...name': media ID 'bad...name' contains '...'" in out
    assert set(registered()) == expected and len(registered()) == COUNT

    (sources / "label-00" / "2024" / "New one.wav").write_bytes(b"")
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("# a comment\nspotify:track:4uLU6hMCjMI75M1A2tKUQC\n\nlabel-00/2024/Track 01\n")
    assert main(["--from", str(sources), "--file", str(ids_file)]) == 0
    assert f"2 added, {COUNT} already known, 1 rejected" in capsys.readouterr().out
    assert registered()[-2:] == ["spotify:track:4uLU6hMCjMI75M1A2tKUQC", "label-00/2024/New one"]


def test_a_bad_setting_or_a_missing_folder_names_itself(tmp_path, home, capsys):
    with pytest.raises(SystemExit):
        main(["--from", str(tmp_path), "--suffixes", "wav"])
    assert "--suffixes must be a comma-separated list" in capsys.readouterr().err
    assert main(["--from", str(tmp_path / "data" / "sources" / "nope")]) == 1
    assert "nope: no such folder" in capsys.readouterr().err


def test_a_folder_outside_the_source_location_adds_nothing(tmp_path, home, capsys):
    outside = tmp_path / "downloads"
    outside.mkdir()
    (outside / "track-1.wav").write_bytes(b"")
    assert main(["--from", str(outside)]) == 1
    err = capsys.readouterr().err
    assert f"--from {outside}: outside the source location {tmp_path / 'data' / 'sources'}" in err
    assert registered() == []


def test_a_subfolder_of_the_source_location_names_ids_from_the_source_location(tmp_path, home, capsys):
    label = tmp_path / "data" / "sources" / "label-7"
    label.mkdir(parents=True)
    (label / "track-1.wav").write_bytes(b"")
    assert main(["--from", str(label)]) == 0
    assert registered() == ["label-7/track-1"]  # where the workers find label-7/track-1.wav


def test_an_invalid_id_named_by_the_user_adds_nothing(home, capsys):
    assert main(["good-1", "a...b", ""]) == 1
    err = capsys.readouterr().err
    assert "nothing added: 2 media IDs are not valid: 'a...b': media ID 'a...b' contains '...'" in err
    assert registered() == []


@pytest.mark.slow
def test_a_gcs_prefix_of_10000_objects_registers_once(home, capsys, monkeypatch):
    from gcp_storage_emulator.server import create_server
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from klio_dev.pubsub_emulator import free_port

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="catalogue")
    server.start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        bucket = storage.Client(project="emulator", credentials=AnonymousCredentials()).bucket("catalogue")
        names = [f"data/sources/label-{i // 100:02d}/track-{i % 100:02d}.{'wav' if i % 2 else 'mp3'}" for i in range(COUNT)]
        # Seeding: the emulator rewrites its whole index on every upload (quadratic: 10,000
        # uploads take many minutes), so one object goes up through the API and the rest are
        # copied from its record into the emulator's store, with the index written once. What
        # is tested, the listing, goes through the real API.
        bucket.blob(names[0]).upload_from_string(b"")
        store = server._api._storage
        template = store.objects["catalogue"][names[0]]
        monkeypatch.setattr(type(store), "_write_config_to_file", lambda self: None)
        for name in names[1:]:
            store.create_file("catalogue", name, b"", {**template, "name": name, "id": f"catalogue/{name}"})
        monkeypatch.undo()
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv("KLIO_DATA_ROOT", "gs://catalogue/data")
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        bucket.blob("data/sources/readme.txt").upload_from_string(b"not a source")
        bucket.blob("elsewhere/track-x.wav").upload_from_string(b"outside the prefix")

        assert main(["--from", "gs://catalogue/data/sources"]) == 0
        assert f"{COUNT} added, 0 already known, 0 rejected" in capsys.readouterr().out
        assert set(registered()) == {name[len("data/sources/"):].rsplit(".", 1)[0] for name in names}
        assert main(["--from", "gs://catalogue/data/sources"]) == 0
        assert f"0 added, {COUNT} already known" in capsys.readouterr().out
    finally:
        server.stop()

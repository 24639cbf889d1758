import os

import librosa
import numpy as np
import pytest

from klio_dev.demo import KINDS, main, register, synthesize, write_catalogue


def test_catalogue_has_every_kind_and_format_and_decodes(tmp_path):
    ids = write_catalogue(str(tmp_path), count=8, seconds=1.0)
    assert ids[:4] == ["demo-000-tone", "demo-001-chord", "demo-002-sweep", "demo-003-noise"]
    files = sorted(os.listdir(tmp_path))
    assert {os.path.splitext(f)[1] for f in files} == {".wav", ".flac", ".ogg", ".mp3"}
    for name in files:
        y, sr = librosa.load(os.path.join(tmp_path, name), sr=None)
        assert sr == 44100
        assert 0.9 < len(y) / sr < 1.2, name  # MP3 frames may pad the end a little
        assert 0.05 < np.abs(y).max() <= 0.75, name  # peak 0.5; lossy codecs overshoot on noise


def test_rewriting_keeps_existing_files(tmp_path):
    write_catalogue(str(tmp_path), count=2, seconds=0.5)
    path = tmp_path / "demo-000-tone.wav"
    before = path.stat().st_mtime_ns
    assert write_catalogue(str(tmp_path), count=3, seconds=0.5) == [
        "demo-000-tone", "demo-001-chord", "demo-002-sweep"]
    assert path.stat().st_mtime_ns == before


@pytest.mark.parametrize("kind", KINDS)
def test_clips_are_deterministic_and_faded(kind):
    a, b = synthesize(kind, 0.5, seed=3), synthesize(kind, 0.5, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a[0] == 0 and abs(a[-1]) < 1e-6


def test_register_adds_only_new_partitions(instance):
    assert register(instance, ["a", "b"]) == ["a", "b"]
    assert register(instance, ["b", "c"]) == ["c"]
    assert instance.get_dynamic_partitions("media_ids") == ["a", "b", "c"]


def test_cli_refuses_to_register_without_dagster_home(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(["--count", "1", "--seconds", "0.2", "--root", str(tmp_path)]) == 2
    assert "DAGSTER_HOME is not set" in capsys.readouterr().err
    assert main(["--count", "1", "--seconds", "0.2", "--root", str(tmp_path), "--no-register"]) == 0
    assert os.listdir(tmp_path / "sources") == ["demo-000-tone.wav"]

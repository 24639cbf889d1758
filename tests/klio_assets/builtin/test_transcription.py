"""The trained model asset: Basic Pitch names the notes of known clips, loaded once per worker."""

import os

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import soundfile

from klio_assets import Waveform, build_media_assets
from klio_assets.builtin.audio import waveform
from klio_assets.builtin.transcription import COLUMNS, BasicPitch, NoteEventsConfig, note_events
from klio_core.codecs import TABLE
from pipelines import worker_resources
from resources.beam import BeamRunner
from resources.storage import LocalMediaStorage
from tests.conftest import latest_metadata, materialize_ids, run_summary

RATE = 22050
C4, E4, G4, A4 = 60, 64, 67, 69


def hz(midi: int) -> float:
    return 440.0 * 2 ** ((midi - A4) / 12)


def tones(*pitches: int, seconds: float = 2.0, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * sum(np.sin(2 * np.pi * hz(p) * t) for p in pitches) / len(pitches)).astype(np.float32)


@pytest.fixture(scope="module")
def model() -> BasicPitch:
    return BasicPitch()


def notes(samples: np.ndarray, model: BasicPitch, rate: int = RATE) -> pd.DataFrame:
    return note_events.fn(Waveform(samples, rate), model, NoteEventsConfig())


def test_a_tone_is_one_note_of_its_pitch_for_the_whole_clip(model):
    table = notes(tones(A4), model)
    assert list(table.columns) == COLUMNS
    assert table["pitch_midi"].tolist() == [A4] and table["note"].tolist() == ["A4"]
    assert table["start_s"][0] < 0.1 and table["end_s"][0] > 1.9
    assert 0.3 < table["confidence"][0] <= 1


def test_a_chord_is_its_three_notes(model):
    assert sorted(notes(tones(C4, E4, G4), model)["pitch_midi"]) == [C4, E4, G4]


def test_notes_in_sequence_come_in_order_with_their_times(model):
    table = notes(np.concatenate([tones(C4, seconds=1.0), tones(G4, seconds=1.0)]), model)
    assert table["pitch_midi"].tolist() == [C4, G4]
    assert table["end_s"][0] == pytest.approx(1.0, abs=0.1) and table["start_s"][1] == pytest.approx(1.0, abs=0.1)


def test_any_sample_rate_is_resampled_for_the_model(model):
    assert notes(tones(E4, rate=44100), model, rate=44100)["pitch_midi"].tolist() == [E4]


def test_silence_has_no_notes(model):
    for samples in (np.zeros(RATE, np.float32), np.zeros(0, np.float32)):
        table = notes(samples, model)
        assert table.empty and list(table.columns) == COLUMNS


def test_the_table_round_trips_through_its_csv(model):
    table = notes(tones(C4, E4, G4), model)
    pd.testing.assert_frame_equal(TABLE.decode(TABLE.encode(table)), table)


def test_a_run_stores_the_notes_with_a_table_view_and_loads_the_model_once(instance, store_root):
    worker_resources.release_all()
    sources = os.path.join(store_root, "sources")
    clips = {"a4-tone": tones(A4), "c-major-chord": tones(C4, E4, G4), "silence": np.zeros(RATE, np.float32)}
    for media_id, samples in clips.items():
        soundfile.write(os.path.join(sources, media_id + ".wav"), samples, RATE, subtype="PCM_16")
    resources = {"media_storage": LocalMediaStorage(root=store_root), "beam_runner": BeamRunner()}
    result = materialize_ids([build_media_assets([waveform, note_events])], list(clips), instance, resources)
    assert result.success

    for media_id, expected in {"a4-tone": [A4], "c-major-chord": [C4, E4, G4], "silence": []}.items():
        meta = latest_metadata(instance, "note_events", media_id)
        with open(meta["path"].value, "rb") as f:
            assert sorted(TABLE.decode(f.read())["pitch_midi"]) == expected, media_id
        assert meta["rows"].value == len(expected)
        view = meta["preview"]  # the UI shows the first rows as a table
        assert isinstance(view, dg.TableMetadataValue)
        assert sorted(r.data["pitch_midi"] for r in view.records) == expected
        assert [c.name for c in view.schema.columns] == COLUMNS
    evaluations = {e.partition: e for e in result.get_asset_check_evaluations() if e.check_name == "notes_well_formed"}
    assert list(evaluations) == [None] and evaluations[None].passed  # the run's; a pass per ID is counted
    assert evaluations[None].metadata["passed"].value == len(clips)
    summary = run_summary(instance, "note_events", result.run_id)
    assert summary["model_loads"] == 1  # one worker (this process), three media IDs
    worker_resources.release_all()

"""A trained model as a media asset: the notes played in a clip, by Spotify's Basic Pitch.

Basic Pitch (Bittner et al., ICASSP 2022; Apache-2.0) is a small polyphonic note-transcription
network, instrument-agnostic, with 88 piano-key outputs. Its ``basic-pitch`` wheel ships the
trained weights as ONNX (``saved_models/icassp_2022/nmp.onnx``, 230 kB); ONNX Runtime runs them
on CPU. Nothing is downloaded at run time.

The wheel's own dependencies pin TensorFlow < 2.15.1 (numpy 1) on Linux with Python 3.11+, which
this project neither needs nor can install beside numpy 2, so it is installed without them
(``pip install --no-deps -r model-requirements.txt``, done by ``scripts/setup.sh`` and the
Dockerfile) and never imported: only its model file is read. The note decoding below is this
project's own, simpler than the wheel's (no pitch bends, no MIDI).

The model is loaded once per worker process (``setup=``) and runs single-threaded, so that a
worker per core does not double-book the cores.
"""

import importlib.util
import itertools
import os

import librosa
import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from klio_assets import ItemCheck, Waveform, media_asset

GROUP = "transcription"
SAMPLE_RATE = 22050
"""The model's input rate (Hz)."""
WINDOW_SAMPLES = 2 * SAMPLE_RATE - 256
"""One model input: 2 s less one hop (43,844 samples), giving 172 output frames."""
OVERLAP_FRAMES = 30
"""Frames shared by neighbouring windows; half of them is cut from each side of a window."""
LOWEST_MIDI = 21  # A0, the piano's lowest key: output column 0
HIGHEST_MIDI = LOWEST_MIDI + 87
_INPUT = "serving_default_input_2:0"
_NOTE, _ONSET = "StatefulPartitionedCall:1", "StatefulPartitionedCall:2"


def model_path() -> str:
    """The ONNX file inside the installed ``basic-pitch`` wheel (found without importing it: its
    ``__init__`` probes for TensorFlow, CoreML and TFLite and warns about each)."""
    spec = importlib.util.find_spec("basic_pitch")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the Basic Pitch model is not installed: run scripts/setup.sh, or "
            "pip install --no-deps -r model-requirements.txt")
    return os.path.join(spec.submodule_search_locations[0], "saved_models", "icassp_2022", "nmp.onnx")


class BasicPitch:
    """The loaded model: ``posteriorgrams(samples)`` gives per-frame note and onset likelihoods."""

    def __init__(self, path: str | None = None):
        import onnxruntime  # here, so that only a worker that runs the model pays the import

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(path or model_path(), options,
                                                    providers=["CPUExecutionProvider"])

    def posteriorgrams(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """``(note, onset, frame_s)`` for mono float32 ``samples`` at 22,050 Hz: two arrays of
        shape (frames, 88), likelihoods in [0, 1] per piano key, and the seconds per frame.

        The clip is cut into overlapping 2 s windows (all sent in one call) and the windows'
        outputs are joined, each losing the half of the overlap that its neighbour covers."""
        overlap = OVERLAP_FRAMES * 256
        hop = WINDOW_SAMPLES - overlap
        padded = np.concatenate([np.zeros(overlap // 2, np.float32), np.asarray(samples, np.float32)])
        starts = range(0, max(len(padded) - overlap // 2, 1), hop)
        windows = np.zeros((len(starts), WINDOW_SAMPLES, 1), np.float32)
        for row, start in enumerate(starts):
            chunk = padded[start:start + WINDOW_SAMPLES]
            windows[row, :len(chunk), 0] = chunk
        note, onset = self.session.run([_NOTE, _ONSET], {_INPUT: windows})
        cut = OVERLAP_FRAMES // 2
        kept = note.shape[1] - 2 * cut
        frame_s = hop / kept / SAMPLE_RATE
        frames = int(np.ceil(len(samples) / SAMPLE_RATE / frame_s))

        def joined(out: np.ndarray) -> np.ndarray:
            return out[:, cut:-cut, :].reshape(-1, out.shape[2])[:frames]

        return joined(note), joined(onset), frame_s


class NoteEventsConfig(BaseModel):
    frame_threshold: float = Field(default=0.3, gt=0, lt=1,
                                   description="A key sounds in a frame whose note likelihood exceeds this.")
    onset_threshold: float = Field(default=0.5, gt=0, lt=1,
                                   description="An onset peak above this starts a new note on a sounding key.")
    min_note_s: float = Field(default=0.127, ge=0, description="Shorter notes are dropped (Basic Pitch's default).")


COLUMNS = ["start_s", "end_s", "pitch_midi", "note", "confidence"]


def decode_notes(note: np.ndarray, onset: np.ndarray, frame_s: float, config: NoteEventsConfig) -> pd.DataFrame:
    """Note events from the posteriorgrams: per key, each run of frames above ``frame_threshold``,
    split where an onset peaks above ``onset_threshold``, kept if at least ``min_note_s`` long.
    ``confidence`` is the mean note likelihood over the note."""
    sounding = note > config.frame_threshold
    peaks = ((onset > config.onset_threshold)
             & (onset >= np.roll(onset, 1, axis=0)) & (onset >= np.roll(onset, -1, axis=0)))
    min_frames = max(1, int(round(config.min_note_s / frame_s)))
    rows = []
    for key in np.flatnonzero(sounding.any(axis=0)):
        edges = np.diff(np.concatenate([[0], sounding[:, key].astype(np.int8), [0]]))
        for start, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
            cuts = [start, *(start + 1 + np.flatnonzero(peaks[start + 1:end, key])), end]
            for a, b in itertools.pairwise(cuts):
                if b - a >= min_frames:
                    rows.append((round(a * frame_s, 3), round(b * frame_s, 3), int(LOWEST_MIDI + key),
                                 librosa.midi_to_note(LOWEST_MIDI + key, unicode=False),
                                 round(float(note[a:b, key].mean()), 3)))
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.sort_values(["start_s", "pitch_midi"], ignore_index=True)


def _well_formed(table: pd.DataFrame, config) -> tuple[bool, str]:
    if table.empty:
        return True, "no notes"
    problems = []
    if not table["pitch_midi"].between(LOWEST_MIDI, HIGHEST_MIDI).all():
        problems.append("pitch outside the piano's keys")
    if not (table["start_s"] < table["end_s"]).all():
        problems.append("a note ends before it starts")
    if not table["confidence"].between(0, 1).all():
        problems.append("confidence outside [0, 1]")
    return not problems, "; ".join(problems) or f"{len(table)} notes, MIDI {table['pitch_midi'].min()}-" \
                                                 f"{table['pitch_midi'].max()}"


NOTES_WELL_FORMED = ItemCheck("notes_well_formed", _well_formed,
                              "Every note is on a piano key, ends after it starts, with confidence in [0, 1].")


@media_asset(code_version="1", group_name=GROUP, setup={"model": BasicPitch}, checks=[NOTES_WELL_FORMED])
def note_events(waveform: Waveform, model: BasicPitch, config: NoteEventsConfig) -> pd.DataFrame:
    """The notes played, by Spotify's Basic Pitch model: one row per note with its start and end
    (s), MIDI pitch, note name and confidence. Polyphonic, any instrument."""
    samples = waveform.samples if waveform.samples.ndim == 1 else waveform.samples.mean(axis=0)
    if waveform.sample_rate != SAMPLE_RATE:
        samples = librosa.resample(samples, orig_sr=waveform.sample_rate, target_sr=SAMPLE_RATE)
    return decode_notes(*model.posteriorgrams(samples), config)


TRANSCRIPTION_ASSETS = [note_events]

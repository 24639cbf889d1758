"""The music tags team's media assets: per media ID, one-row tables of tags computed from the
media team's ``waveform`` and ``note_events``, which are named here by parameter (their asset
keys) and read from the shared media storage; nothing of theirs is imported."""

import librosa
import numpy as np
import pandas as pd

from klio_assets import Waveform, media_asset

# Krumhansl and Kessler's key profiles: how well each pitch class fits a major or minor key on C.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
PITCH_CLASSES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
SILENCE_DB = -120.0


def mono(waveform: Waveform) -> np.ndarray:
    return waveform.samples if waveform.samples.ndim == 1 else waveform.samples.mean(axis=0)


def decibels(value: float) -> float:
    return float(20 * np.log10(value)) if value > 0 else SILENCE_DB


@media_asset(code_version="1")
def tempo(waveform: Waveform) -> pd.DataFrame:
    """The tempo (beats per minute) and the number of beats, by librosa's beat tracker."""
    bpm, beats = librosa.beat.beat_track(y=mono(waveform), sr=waveform.sample_rate)
    return pd.DataFrame({"tempo_bpm": [round(float(np.atleast_1d(bpm)[0]), 2)], "beats": [len(beats)]})


@media_asset(code_version="1")
def musical_key(waveform: Waveform) -> pd.DataFrame:
    """The key (for example "A minor"): the major or minor key profile that correlates best with
    the clip's mean chroma (Krumhansl-Schmuckler), and that correlation."""
    chroma = librosa.feature.chroma_stft(y=mono(waveform), sr=waveform.sample_rate).mean(axis=1)
    scores = [(float(np.corrcoef(chroma, np.roll(profile, tonic))[0, 1]), f"{PITCH_CLASSES[tonic]} {mode}")
              for mode, profile in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE)) for tonic in range(12)]
    score, key = max((s if np.isfinite(s) else -1.0, k) for s, k in scores)
    return pd.DataFrame({"key": [key], "correlation": [round(score, 3)]})


@media_asset(code_version="1")
def loudness(waveform: Waveform) -> pd.DataFrame:
    """Mean RMS level and peak level (dBFS), and the dynamic range: the spread of the frame
    levels between their 10th and 95th percentiles (dB)."""
    samples = mono(waveform)
    frames = librosa.feature.rms(y=samples)[0]
    levels = np.array([decibels(v) for v in frames])
    return pd.DataFrame({"rms_dbfs": [round(decibels(float(np.sqrt(np.mean(samples ** 2)))), 2)],
                         "peak_dbfs": [round(decibels(float(np.max(np.abs(samples), initial=0.0))), 2)],
                         "dynamic_range_db": [round(float(np.percentile(levels, 95) - np.percentile(levels, 10)), 2)]})


@media_asset(code_version="1")
def notes_summary(note_events: pd.DataFrame, tempo: pd.DataFrame) -> pd.DataFrame:
    """What was played, in one row: how many notes, their pitch range (MIDI), mean length (s),
    and notes per beat at the clip's tempo."""
    count = len(note_events)
    seconds = float((note_events["end_s"] - note_events["start_s"]).mean()) if count else 0.0
    span_s = float(note_events["end_s"].max() - note_events["start_s"].min()) if count else 0.0
    beats = span_s * float(tempo["tempo_bpm"].iloc[0]) / 60
    return pd.DataFrame({"notes": [count],
                         "lowest_midi": [int(note_events["pitch_midi"].min()) if count else None],
                         "highest_midi": [int(note_events["pitch_midi"].max()) if count else None],
                         "mean_note_s": [round(seconds, 3)],
                         "notes_per_beat": [round(count / beats, 3) if beats else 0.0]})


TAGS_ASSETS = [tempo, musical_key, loudness, notes_summary]

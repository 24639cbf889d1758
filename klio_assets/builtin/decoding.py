"""Decoding a source file into a mono waveform, with errors that say which file and what went wrong.

soundfile (libsndfile) is tried first: WAV, AIFF, FLAC, Ogg (Vorbis, Opus) and MP3, in process.
What it cannot open goes to FFmpeg (Debian's ``ffmpeg`` binary, which ``scripts/`` install): M4A
and AAC, WebM, the audio track of an MP4 video, and anything else FFmpeg reads. FFmpeg decodes
the first audio stream to float32 at the file's own rate; both paths then average the channels
and resample with soxr, as ``librosa.load`` does.

A decode failure names the source (its path and size) and what was tried, never a buffer's
object address. A file that holds less audio than its header declares (a WAV or AIFF cut short
in transfer, an MP3 whose header counts more frames than it carries), or that FFmpeg reports
errors in, is refused with the reason, unless the caller accepts truncated files.
"""

import io
import os
import shutil
import struct
import subprocess
import tempfile

import librosa
import numpy as np
import soundfile

from klio_assets import SourceMedia, Waveform

TRUNCATION_TOLERANCE = 0.01  # decoded may fall short of declared by this fraction (MP3 estimates)


class SourceDecodeError(ValueError):
    """A source file that cannot be turned into a waveform; the message names the file and why."""


def describe_source(source: SourceMedia) -> str:
    return f"source {source.uri or source.media_id + source.suffix} ({len(source.data):,} bytes)"


def decode_source(source: SourceMedia, sample_rate: int, accept_truncated: bool = False) -> Waveform:
    """``source`` as mono float32 at ``sample_rate`` Hz: the same samples as ``librosa.load``."""
    where = describe_source(source)
    if not source.data:
        raise SourceDecodeError(f"{where} is empty")
    try:
        samples, native_rate = _with_soundfile(source.data, where, accept_truncated)
    except _NotOpened as soundfile_error:
        samples, native_rate = _with_ffmpeg(source, where, accept_truncated, tried=str(soundfile_error))
    if not len(samples):
        raise SourceDecodeError(f"{where} holds no audio (0 frames)")
    mono = np.mean(samples, axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if native_rate != sample_rate:
        mono = librosa.resample(mono, orig_sr=native_rate, target_sr=sample_rate)
    return Waveform(np.ascontiguousarray(mono, dtype=np.float32), int(sample_rate))


class _NotOpened(Exception):
    """soundfile could not read the file at all: FFmpeg's turn."""


def _with_soundfile(data: bytes, where: str, accept_truncated: bool) -> tuple[np.ndarray, int]:
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as f:
            declared, native_rate, container = f.frames, f.samplerate, f.format
            samples = f.read(dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError) as e:
        reason = (getattr(e, "error_string", None) or str(e)).strip()
        raise _NotOpened(f"soundfile (libsndfile {soundfile.__libsndfile_version__}): {reason}") from e
    declared = _declared_frames(data, container) or declared
    decoded = len(samples)
    if decoded < declared * (1 - TRUNCATION_TOLERANCE) and not accept_truncated:
        raise SourceDecodeError(
            f"{where} is truncated: its {container} header declares {declared / native_rate:.3f} s "
            f"({declared} frames) but only {decoded / native_rate:.3f} s ({decoded} frames) could be "
            "decoded (set the waveform config accept_truncated: true to keep what is there)")
    return samples, native_rate


def _with_ffmpeg(source: SourceMedia, where: str, accept_truncated: bool, tried: str) -> tuple[np.ndarray, int]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SourceDecodeError(f"{where} could not be decoded: tried {tried}; ffmpeg: not installed "
                                "(apt-get install ffmpeg; scripts/dev.sh and scripts/test.sh install it as root)")
    # A file, not a pipe: MP4 and M4A keep their index at the end, which FFmpeg must seek to.
    with tempfile.NamedTemporaryFile(suffix=os.path.splitext(source.suffix)[1] or ".bin") as f:
        f.write(source.data)
        f.flush()
        done = subprocess.run([ffmpeg, "-nostdin", "-v", "error", "-i", f.name, "-map", "0:a:0", "-vn",
                               "-c:a", "pcm_f32le", "-f", "wav", "pipe:1"], capture_output=True)
    # FFmpeg names the file it read, a temporary copy: name the source instead
    stderr = done.stderr.decode("utf-8", "replace").replace(f.name, source.uri or source.media_id + source.suffix)
    errors = " ".join(stderr.split())[:500]
    if done.returncode != 0 or not done.stdout:
        raise SourceDecodeError(f"{where} could not be decoded: tried {tried}; ffmpeg: "
                                f"{errors or f'exit code {done.returncode}'}")
    if errors and not accept_truncated:
        raise SourceDecodeError(f"{where} is damaged or truncated: ffmpeg reported: {errors} (set the "
                                "waveform config accept_truncated: true to keep what decodes)")
    samples, native_rate = soundfile.read(io.BytesIO(done.stdout), dtype="float32", always_2d=True)
    return samples, native_rate


def _declared_frames(data: bytes, container: str) -> int | None:
    """Frames that a WAV or AIFF header declares. libsndfile counts only the frames present, so a
    cut-short file looks whole to it; the header tells. None when not known."""
    if container == "WAV" and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        block_align = None
        for chunk, offset, size in _chunks(data, "<"):
            if chunk == b"fmt ":
                block_align = struct.unpack_from("<H", data, offset + 12)[0]
            elif chunk == b"data":  # 0 or 0xFFFFFFFF: a stream written on the fly, length unknown
                return size // block_align if block_align and size not in (0, 0xFFFFFFFF) else None
    if container == "AIFF" and data[:4] == b"FORM" and data[8:12] in (b"AIFF", b"AIFC"):
        for chunk, offset, _ in _chunks(data, ">"):
            if chunk == b"COMM":  # channels (2 bytes), then the frame count
                return struct.unpack_from(">I", data, offset + 2)[0]
    return None


def _chunks(data: bytes, byte_order: str):
    """(id, body offset, declared body size) of each RIFF/IFF chunk after the 12-byte file header."""
    offset = 12
    while offset + 8 <= len(data):
        chunk, size = data[offset:offset + 4], struct.unpack_from(byte_order + "I", data, offset + 4)[0]
        yield chunk, offset + 8, size
        offset += 8 + size + (size & 1)

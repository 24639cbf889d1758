"""Decoding sources: the same samples as librosa, and bad files refused with their path, size and reason."""

import io

import librosa
import numpy as np
import pytest
import soundfile

from klio_assets.builtin.decoding import SourceDecodeError, decode_source
from klio_core.media_types import SourceMedia

RATE = 22050


def noisy_clip(seconds: float, fmt: str, subtype: str, channels: int = 1) -> bytes:
    rng = np.random.default_rng(7)
    samples = (0.2 * rng.standard_normal((int(seconds * RATE), channels))).astype("float32")
    buf = io.BytesIO()
    soundfile.write(buf, samples, RATE, format=fmt, subtype=subtype)
    return buf.getvalue()


def source(data: bytes, suffix: str, media_id: str = "clip-1") -> SourceMedia:
    return SourceMedia(media_id, data, suffix, f"/catalogue/{media_id}{suffix}")


@pytest.mark.parametrize("fmt,subtype,suffix", [("WAV", "PCM_16", ".wav"), ("AIFF", "PCM_24", ".aiff"),
                                                ("FLAC", "PCM_16", ".flac"), ("OGG", "VORBIS", ".ogg"),
                                                ("MP3", "MPEG_LAYER_III", ".mp3")])
def test_whole_files_decode_as_librosa_does(fmt, subtype, suffix):
    data = noisy_clip(2.0, fmt, subtype, channels=2)
    expected, _ = librosa.load(io.BytesIO(data), sr=16000, mono=True)
    decoded = decode_source(source(data, suffix), 16000)
    assert decoded.sample_rate == 16000 and decoded.samples.dtype == np.float32
    np.testing.assert_array_equal(decoded.samples, expected)


@pytest.mark.parametrize("fmt,subtype,suffix", [("WAV", "PCM_16", ".wav"), ("AIFF", "PCM_16", ".aiff"),
                                                ("MP3", "MPEG_LAYER_III", ".mp3")])
def test_a_file_cut_in_half_is_refused_with_both_lengths(fmt, subtype, suffix):
    whole = noisy_clip(2.0, fmt, subtype)
    half = whole[:len(whole) // 2]
    with pytest.raises(SourceDecodeError) as failure:
        decode_source(source(half, suffix), RATE)
    message = str(failure.value)
    assert f"/catalogue/clip-1{suffix} ({len(half):,} bytes) is truncated" in message
    assert "declares 2.000 s" in message and "accept_truncated" in message
    kept = decode_source(source(half, suffix), RATE, accept_truncated=True)  # the documented way out
    assert 0.8 < kept.duration_s < 1.2


def test_a_stream_wav_with_unknown_length_is_not_called_truncated():
    data = bytearray(noisy_clip(1.0, "WAV", "PCM_16"))
    data[40:44] = b"\xff\xff\xff\xff"  # data chunk size "unknown", as streaming writers leave it
    assert decode_source(source(bytes(data), ".wav"), RATE).duration_s == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("data,suffix,reason", [
    (b"", ".wav", "/catalogue/clip-1.wav (0 bytes) is empty"),
    (b"this is a text file, not audio\n", ".mp3",
     "/catalogue/clip-1.mp3 (31 bytes) could not be decoded: tried soundfile (libsndfile"),
    (b"fLaC" + bytes(500), ".flac", "/catalogue/clip-1.flac (504 bytes) could not be decoded"),
])
def test_undecodable_files_name_path_size_and_what_was_tried(data, suffix, reason):
    with pytest.raises(SourceDecodeError) as failure:
        decode_source(source(data, suffix), RATE)
    assert reason in str(failure.value)
    assert "object at 0x" not in str(failure.value)


# --- Every format FFmpeg decodes, made offline by the test with Debian's ffmpeg -----------------

FFMPEG_FORMATS = {  # suffix: encoder arguments
    ".wav": ["-c:a", "pcm_s16le"], ".aiff": ["-c:a", "pcm_s16be"], ".flac": ["-c:a", "flac"],
    ".ogg": ["-c:a", "libvorbis", "-q:a", "6"], ".oga": ["-c:a", "libvorbis", "-q:a", "6"],
    ".opus": ["-c:a", "libopus", "-b:a", "128k"], ".mp3": ["-c:a", "libmp3lame", "-b:a", "192k"],
    ".m4a": ["-c:a", "aac", "-b:a", "192k"], ".aac": ["-c:a", "aac", "-b:a", "192k", "-f", "adts"],
    ".webm": ["-c:a", "libopus", "-b:a", "128k"],
    ".mp4": ["-c:a", "aac", "-b:a", "192k", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-shortest"],
}
LOSSLESS = {".wav", ".aiff", ".flac"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A 2 s stereo clip at 44.1 kHz, a tone in noise (noise keeps the codecs honest), as a WAV."""
    folder = tmp_path_factory.mktemp("formats")
    t = np.arange(2 * 44100) / 44100
    rng = np.random.default_rng(11)
    left = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
    stereo = np.stack([left, 0.8 * left], axis=1).astype(np.float32)
    path = folder / "reference.wav"
    soundfile.write(path, stereo, 44100, subtype="PCM_16")
    return folder, path


def encode(reference_wav, folder, suffix: str) -> bytes:
    import subprocess
    out = folder / f"clip{suffix}"
    video = ["-f", "lavfi", "-i", "color=c=black:s=64x64:r=10"] if suffix == ".mp4" else []
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(reference_wav), *video,
                    *FFMPEG_FORMATS[suffix], str(out)], check=True)
    return out.read_bytes()


@pytest.mark.parametrize("suffix", sorted(FFMPEG_FORMATS))
def test_every_common_format_decodes_to_the_same_waveform(reference, suffix):
    folder, reference_wav = reference
    expected, _ = librosa.load(reference_wav, sr=RATE, mono=True)  # the reference decode
    decoded = decode_source(source(encode(reference_wav, folder, suffix), suffix), RATE)
    assert decoded.sample_rate == RATE and decoded.samples.dtype == np.float32 and decoded.samples.ndim == 1
    if suffix in LOSSLESS:
        np.testing.assert_allclose(decoded.samples, expected, atol=1e-6)
        return
    # Lossy codecs pad the start (encoder delay): align, then the signals must agree closely.
    assert abs(decoded.samples.size - expected.size) < 0.1 * RATE, (decoded.samples.size, expected.size)
    n = min(decoded.samples.size, expected.size) - 4096
    probe = expected[2048:2048 + n // 4]
    shift = int(np.argmax(np.correlate(decoded.samples[:n + 4096], probe, "valid"))) - 2048
    a, b = decoded.samples[max(shift, 0):][:n], expected[max(-shift, 0):][:n]
    size = min(a.size, b.size)
    correlation = float(np.corrcoef(a[:size], b[:size])[0, 1])
    assert correlation > 0.95, f"{suffix}: correlation {correlation:.3f} with the reference at lag {shift}"

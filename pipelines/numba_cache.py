"""Fill numba's on-disk cache of librosa's kernels in one process, before any worker starts.

librosa compiles its kernels with numba and keeps them in an on-disk cache (``cache=True``). A
generalized ufunc is cached as two files that must agree on the kernel's native name, and that
name depends on how many functions the compiling process had compiled before. Fresh processes
that compile the same kernels at once (the warm workers of a stack, a test suite's processes)
can leave the two files disagreeing, and from then on every process that calls that kernel
crashes with a segmentation fault (numba/numba#10128; the fix, numba/numba#10545, is not in a
release as of numba 0.68.1). It was seen here as ``librosa.beat.beat_track`` segfaulting in
every process of one environment after many processes had started in a fresh one.

``python -m pipelines.numba_cache`` removes the cached kernels (librosa's, or all of
``NUMBA_CACHE_DIR`` when that is set) and compiles librosa's again, alone: importing every
librosa module compiles the generalized ufuncs, which librosa declares with their signatures,
and one call of each librosa function the built-in and team assets use compiles the rest.
``scripts/setup.sh`` and both images run it once after installing.
"""

import importlib
import importlib.util
import os
import pkgutil
import sys
from pathlib import Path

CACHE_SUFFIXES = (".nbi", ".nbc")


def cache_folder() -> Path:
    """Where numba keeps librosa's kernels: ``NUMBA_CACHE_DIR`` when set (the images set it; that
    folder holds every package's kernels, so it is taken whole), else librosa's own folder."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    spec = importlib.util.find_spec("librosa")
    assert spec is not None and spec.origin is not None, "librosa is not installed"
    return Path(spec.origin).parent


def cached_kernels() -> list[Path]:
    folder = cache_folder()
    return sorted(p for p in folder.rglob("*") if p.suffix in CACHE_SUFFIXES) if folder.exists() else []


def remove_cached_kernels() -> int:
    """Delete librosa's cached kernels (before anything imports librosa); how many files."""
    stale = cached_kernels()
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def compile_kernels() -> None:
    import librosa
    import numpy as np

    for module in pkgutil.walk_packages(librosa.__path__, "librosa."):
        try:
            importlib.import_module(module.name)
        except ImportError:  # a module for an optional dependency (librosa.display: matplotlib)
            continue
    y = np.random.default_rng(0).standard_normal(3 * 22050).astype("float32")
    mel = librosa.feature.melspectrogram(y=y, sr=22050)
    librosa.feature.mfcc(S=librosa.power_to_db(mel))
    librosa.resample(y, orig_sr=44100, target_sr=22050)
    spectrum = np.abs(librosa.stft(y))
    librosa.util.softmask(spectrum, librosa.decompose.nn_filter(spectrum), power=2)
    librosa.amplitude_to_db(spectrum)
    librosa.beat.beat_track(y=y, sr=22050)
    librosa.feature.chroma_stft(y=y, sr=22050)
    librosa.feature.rms(y=y)


def main() -> None:
    removed = remove_cached_kernels()
    compile_kernels()
    print(f"numba cache at {cache_folder()}: {removed} files removed, {len(cached_kernels())} compiled",
          file=sys.stderr)


if __name__ == "__main__":
    main()

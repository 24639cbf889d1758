"""The numba warm-up that setup and both images run: it leaves every generalized ufunc that
librosa caches compiled in the cache (so no two workers compile one at once: numba/numba#10128),
and it clears what was cached before."""

import os
import re
import subprocess
import sys
from pathlib import Path

import librosa
import pytest

# a librosa kernel: `@numba.guvectorize(`, `cache=True` in its arguments, then `def name(`
CACHED_GUFUNC = re.compile(r"@(?:numba\.)?guvectorize\((?:(?!\ndef ).)*?\bcache=True\b(?:(?!\ndef ).)*\ndef (\w+)\(", re.S)


def cached_gufuncs() -> set[tuple[str, str]]:
    return {(source.stem, name) for source in Path(librosa.__file__).parent.rglob("*.py")
            for name in CACHED_GUFUNC.findall(source.read_text())}


@pytest.mark.slow
def test_the_warm_up_compiles_every_cached_librosa_gufunc_and_drops_stale_files(tmp_path):
    kernels = cached_gufuncs()
    assert ("beat", "__beat_track_dp") in kernels and len(kernels) >= 9
    cache = tmp_path / "numba-cache"
    (cache / "old").mkdir(parents=True)
    (cache / "old" / "guf-beat.__last_beat_selector-662.py311.nbi").write_bytes(b"stale")
    result = subprocess.run([sys.executable, "-m", "pipelines.numba_cache"], capture_output=True, text=True,
                            env={**os.environ, "NUMBA_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (cache / "old" / "guf-beat.__last_beat_selector-662.py311.nbi").exists()
    names = [p.name for p in cache.rglob("guf-*.nbi")]
    missing = [f"{module}.{name}" for module, name in sorted(kernels)
               if not any(n.startswith(f"guf-{module}.{name}-") for n in names)]
    assert missing == []
    assert "1 files removed" in result.stderr

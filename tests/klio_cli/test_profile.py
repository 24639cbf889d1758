"""klio-profile: per-asset cost on a few IDs, in-process, writing nothing but the profile."""

import os
import pstats
import re
import subprocess
import sys

from klio_core.stack_file import Stack, write_stack
from klio_dev.demo import write_catalogue


def test_profiles_the_assets_and_their_upstream_and_writes_a_standard_profile(tmp_path):
    root = tmp_path / "data"
    write_catalogue(str(root / "sources"), 2, 1.0)
    for name in os.listdir(root / "sources"):  # names found only in this data root
        os.rename(root / "sources" / name, root / "sources" / f"only-here-{name}")
    ids = sorted(os.path.splitext(name)[0] for name in os.listdir(root / "sources"))
    out = tmp_path / "mfcc.prof"
    write_stack(str(tmp_path), Stack(data_root=str(root)))  # as klio-dev does: the data root comes from there
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLIO_")} | {"DAGSTER_HOME": str(tmp_path)}
    result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "klio-profile"), "mfcc", "--ids", *ids,
                             "--output", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {m.group(1): [float(v) for v in m.group(2).split(" | ")]
            for m in re.finditer(r"^\| (\w+) \| ([\d. |]+) \|$", result.stdout, re.M)}
    assert list(rows) == ["waveform", "mel_spectrogram", "mfcc"]  # upstream first; not spectrogram
    for name, (wall_p50, wall_max, cpu_p50, cpu_max, peak_mib) in rows.items():
        assert 0 < wall_p50 <= wall_max and 0 < cpu_p50 <= cpu_max and peak_mib > 0, (name, rows[name])
    assert "mel_spectrogram: hottest functions" in result.stdout
    profiled = {name for _, _, name in pstats.Stats(str(out)).stats}
    assert {"melspectrogram", "mfcc"} <= profiled
    assert sorted(os.listdir(root)) == ["sources"]  # nothing was written


def test_refuses_an_invalid_media_id_before_reading_anything(tmp_path):
    env = {**os.environ, "KLIO_DATA_ROOT": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path)}
    result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "klio-profile"), "mfcc",
                             "--ids", "../outside"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "klio-profile: media ID '../outside' has an empty, '.' or '..'" in result.stderr

"""A demo catalogue made offline: synthetic clips in several formats, registered as media IDs.

    klio-demo-catalogue --count 12 --root data

writes ``data/sources/demo-000-tone.wav``, ``demo-001-chord.flac``, ``demo-002-sweep.ogg``,
``demo-003-noise.mp3``, ... and adds their IDs to the ``media_ids`` partitions of the Dagster
instance in ``$DAGSTER_HOME``. Running it again keeps what exists and adds what is missing.
"""

import argparse
import os
import sys

import numpy as np
import soundfile

from klio_assets.settings import Settings
from klio_core.media_ids import PARTITIONS_NAME

SOURCE_SAMPLE_RATE = 44100
KINDS = ("tone", "chord", "sweep", "noise")
FORMATS = ((".wav", "WAV", "PCM_16"), (".flac", "FLAC", "PCM_16"), (".ogg", "OGG", "VORBIS"),
           (".mp3", "MP3", "MPEG_LAYER_III"))


def synthesize(kind: str, seconds: float, seed: int, sample_rate: int = SOURCE_SAMPLE_RATE) -> np.ndarray:
    """A mono float32 clip of ``kind`` (tone, chord, sweep or noise); ``seed`` varies pitch and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    base = 110.0 * 2 ** (rng.integers(0, 24) / 12)
    y: np.ndarray
    if kind == "tone":
        y = np.sin(2 * np.pi * base * t)
    elif kind == "chord":
        y = np.sum([np.sin(2 * np.pi * base * ratio * t) for ratio in (1.0, 1.25, 1.5)], axis=0) / 3
    elif kind == "sweep":
        f0, f1 = base, base * 16
        y = np.sin(2 * np.pi * f0 * seconds / np.log(f1 / f0) * (np.exp(t / seconds * np.log(f1 / f0)) - 1))
    elif kind == "noise":
        y = rng.standard_normal(t.size) / 3
    else:
        raise ValueError(f"unknown clip kind {kind!r}; choose one of {KINDS}")
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.05)
    return (0.5 * np.clip(y, -1, 1) * fade).astype(np.float32)


def write_catalogue(source_dir: str, count: int, seconds: float) -> list[str]:
    """Write ``count`` clips under ``source_dir`` (skipping existing ones); return their media IDs."""
    os.makedirs(source_dir, exist_ok=True)
    ids = []
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        suffix, fmt, subtype = FORMATS[i % len(FORMATS)]
        media_id = f"demo-{i:03d}-{kind}"
        path = os.path.join(source_dir, media_id + suffix)
        if not os.path.exists(path):
            tmp = path + ".partial"
            soundfile.write(tmp, synthesize(kind, seconds, seed=i), SOURCE_SAMPLE_RATE,
                            format=fmt, subtype=subtype)
            os.replace(tmp, path)
        ids.append(media_id)
    return ids


def register(instance, ids: list[str]) -> list[str]:
    """Add the IDs that are not yet ``media_ids`` partitions; return those added."""
    new = [i for i in ids if not instance.has_dynamic_partition(PARTITIONS_NAME, i)]
    if new:
        instance.add_dynamic_partitions(PARTITIONS_NAME, new)
    return new


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=12, help="number of clips (default 12)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each clip (default 3)")
    parser.add_argument("--root", default=Settings.from_env().data_root,
                        help="storage root; clips go to <root>/sources (default $KLIO_DATA_ROOT or ./data)")
    parser.add_argument("--no-register", action="store_true",
                        help="only write files; do not add partitions to the Dagster instance")
    args = parser.parse_args(argv)

    ids = write_catalogue(os.path.join(args.root, "sources"), args.count, args.seconds)
    print(f"{len(ids)} demo clips in {os.path.join(os.path.abspath(args.root), 'sources')}")
    if not args.no_register:
        if not os.environ.get("DAGSTER_HOME"):
            print("DAGSTER_HOME is not set: cannot register media IDs (use --no-register)", file=sys.stderr)
            return 2
        from dagster import DagsterInstance

        with DagsterInstance.get() as instance:
            added = register(instance, ids)
        print(f"registered {len(added)} new media IDs in {os.environ['DAGSTER_HOME']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What each built-in asset's per-item function costs: ``.venv/bin/python bench/item_cost.py [--n 30] [--seconds 3]``.

N noisy clips (bench/records.py's) go through the 12 built-in assets' own functions in a plain
loop, upstream values handed on in memory, on one core (BLAS and OpenMP pinned to one thread):
the media work alone, with no storage and no framework. Reported per asset: median and max ms per
item, after one warm-up clip (numba compiles on the first librosa call).
"""

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_name] = "1"  # one core, before numpy and librosa load

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from klio_assets.definitions import MEDIA_ASSETS  # noqa: E402
from klio_assets.media_types import SourceMedia  # noqa: E402

import records  # noqa: E402  (bench/records.py, beside this file)


def run_item(source: SourceMedia, timings: dict[str, list[float]]) -> None:
    values = {}
    for media in MEDIA_ASSETS:  # dependency order
        kwargs = {i.param: source if i.asset is None else values[i.asset] for i in media.inputs}
        if media.config_cls is not None:
            kwargs["config"] = media.config_cls()
        started = time.perf_counter()
        value = media.fn(**kwargs)
        timings.setdefault(media.name, []).append((time.perf_counter() - started) * 1000)
        values.update(value if media.returns_dict else {media.name: value})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-item-cost-") as folder:
        ids = records.write_noisy_catalogue(folder, "clip", args.n + 1, args.seconds)
        sources = [SourceMedia(i, open(os.path.join(folder, i + ".flac"), "rb").read(), ".flac") for i in ids]
    run_item(sources[0], {})  # warm-up
    timings: dict[str, list[float]] = {}
    for source in sources[1:]:
        run_item(source, timings)
    totals = [sum(t[i] for t in timings.values()) for i in range(args.n)]
    print(f"{args.n} noisy {args.seconds:g} s clips, one core, per-item functions only\n")
    print("| asset (function) | ms per item, median | max |\n| --- | --- | --- |")
    for name, ms in timings.items():
        print(f"| {name} | {statistics.median(ms):.1f} | {max(ms):.1f} |")
    print(f"| **all 12 assets** (target <= 150 ms) | **{statistics.median(totals):.1f}** | {max(totals):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What each built-in asset's per-item function costs: ``.venv/bin/python bench/item_cost.py [--n 30] [--seconds 3]``.

N noisy clips (bench/records.py's) go through the built-in assets' own functions, upstream
values handed on in memory, on one core (BLAS, OpenMP and numba pinned to one thread): the media
work alone, with no storage writes and no framework. The calls and their timing are
``klio-profile``'s (``klio_cli.profile``), after one warm-up clip (numba compiles on the
first librosa call). Reported per asset: median and max ms per item; the total of the 12 signal
assets (the target), and with the trained model (``note_events``) beside it.
"""

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_name] = "1"  # one core, before numpy and librosa load

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import records  # noqa: E402  (bench/records.py, beside this file)

from klio_assets.builtin.transcription import TRANSCRIPTION_ASSETS  # noqa: E402
from klio_assets.definitions import MEDIA_ASSETS  # noqa: E402
from klio_cli.profile import profile_items  # noqa: E402
from klio_core.media_store import LocalMediaStore  # noqa: E402
from klio_dev import bytecode  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    print(bytecode.summary())
    with tempfile.TemporaryDirectory(prefix="bench-item-cost-") as folder:
        store = LocalMediaStore(folder)
        ids = records.write_noisy_catalogue(store.source_location, "clip", args.n + 1, args.seconds)
        profile_items(MEDIA_ASSETS, store, ids[:1])  # warm-up
        costs = profile_items(MEDIA_ASSETS, store, ids[1:])
    models = {a.name for a in TRANSCRIPTION_ASSETS}
    signal = [sum(c.wall_ms[i] for name, c in costs.items() if name not in models) for i in range(args.n)]
    totals = [sum(c.wall_ms[i] for c in costs.values()) for i in range(args.n)]
    print(f"{args.n} noisy {args.seconds:g} s clips, one core, per-item functions only\n")
    print("| asset (function) | ms per item, median | max |\n| --- | --- | --- |")
    for name, cost in costs.items():
        print(f"| {name} | {statistics.median(cost.wall_ms):.1f} | {max(cost.wall_ms):.1f} |")
    print(f"| **the 12 signal assets** (target <= 150 ms) | **{statistics.median(signal):.1f}** | {max(signal):.1f} |")
    print(f"| the same and the trained model (note_events) | {statistics.median(totals):.1f} | {max(totals):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

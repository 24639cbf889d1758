"""What ``timeout_s`` costs per call: ``.venv/bin/python bench/timeout_cost.py [--calls 50]``.

An asset with ``timeout_s`` runs each call in a child process that can be killed
(``pipelines.isolation``). This prints, side by side in one run, the per-call time of the same
function called directly and through the child, on a noisy 30 s waveform at 22,050 Hz (the
input travels to the child and the value back), and the one-off cost of starting a child.
"""

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from klio_core.media_types import Waveform  # noqa: E402
from klio_dev import bytecode  # noqa: E402
from pipelines.isolation import ChildCaller  # noqa: E402


def peak(waveform: Waveform) -> np.ndarray:
    return np.abs(waveform.samples).max(keepdims=True)


def identity(waveform: Waveform) -> np.ndarray:
    return waveform.samples


def per_call_ms(call, calls: int) -> float:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    print(bytecode.summary())
    samples = (0.1 * np.random.default_rng(0).standard_normal(30 * 22050)).astype(np.float32)
    kwargs = {"waveform": Waveform(samples, 22050)}
    caller = ChildCaller()
    started = time.perf_counter()
    caller.call(peak, kwargs, timeout_s=60)
    start_ms = (time.perf_counter() - started) * 1000
    print(f"| call (30 s waveform in, {samples.nbytes / 1e6:.1f} MB) | direct, ms | in a child, ms | extra, ms |")
    print("| --- | --- | --- | --- |")
    for fn, label in ((peak, "peak (1 value back)"), (identity, "identity (the array back)")):
        direct = per_call_ms(lambda fn=fn: fn(**kwargs), args.calls)
        child = per_call_ms(lambda fn=fn: caller.call(fn, kwargs, timeout_s=60), args.calls)
        print(f"| {label} | {direct:.2f} | {child:.2f} | {child - direct:.2f} |")
    caller.close()
    print(f"\nstarting a child and its first call: {start_ms:.0f} ms")


if __name__ == "__main__":
    main()

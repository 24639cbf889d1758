"""The commands' start-up, side by side in one run: ``.venv/bin/python bench/cli.py [--runs 10]``.

Times, alternating run by run, (a) ``klio-publish ID`` from a second terminal (nothing exported
but the Dagster home) against a running Pub/Sub emulator that a stack file names, as ``klio-dev``
writes it, and (b) ``python -c "import google.cloud.pubsub_v1"``, the floor any Python publisher
pays; and (c) each command's ``--help``. Prints medians and the ratio a / b (target: at most
1.3). Nothing here is a test: figures go to docs/BENCHMARKS.md.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from klio_core.stack_file import Stack, write_stack  # noqa: E402
from klio_dev.pubsub_emulator import PubSubEmulator  # noqa: E402
from resources.pubsub import PubSubResource  # noqa: E402

BIN = os.path.dirname(sys.executable)
COMMANDS = ["klio-publish", "klio-backfill", "klio-register", "klio-verify", "klio-profile", "klio-dev"]


def timed(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr[-500:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="klio-cli-bench-")
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "DAGSTER_HOME": home}
    with PubSubEmulator(project="klio-dev") as emulator:
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
        PubSubResource(project="klio-dev").ensure_exists()
        write_stack(home, Stack(pubsub_emulator_host=emulator.host))
        publish = [os.path.join(BIN, "klio-publish"), "bench-track-1"]
        floor = [sys.executable, "-c", "import google.cloud.pubsub_v1"]
        timed(publish, env), timed(floor, env)  # the page cache is warm for both
        pairs = [(timed(publish, env), timed(floor, env)) for _ in range(args.runs)]
    a, b = statistics.median(p for p, _ in pairs), statistics.median(f for _, f in pairs)
    ratios = sorted(p / f for p, f in pairs)
    print(f"| klio-publish ID (second terminal, emulator) | {a:.2f} s |")
    print(f"| python -c 'import google.cloud.pubsub_v1' | {b:.2f} s |")
    print(f"| ratio, median of {args.runs} pairs (min-max) | {statistics.median(ratios):.2f} "
          f"({ratios[0]:.2f}-{ratios[-1]:.2f}) | target <= 1.3")
    for command in COMMANDS:
        times = [timed([os.path.join(BIN, command), "--help"], env) for _ in range(3)]
        print(f"| {command} --help | {statistics.median(times):.2f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

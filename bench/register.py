"""Registering a catalogue: ``.venv/bin/python bench/register.py [--n 100000]``.

Times ``klio-register`` (in this process, on a fresh instance of the project's dagster.yaml,
SQLite) over N sources in a local folder (one label folder per 100), then again over the same
folder (nothing new: the idempotent pass), and over a file of N IDs into another fresh
instance. Listing, checking and adding are all inside the timed part; writing the files is not.
"""

import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from klio_cli.register import main as register  # noqa: E402
from klio_dev import bytecode  # noqa: E402


def timed(home: str, argv: list[str]) -> tuple[float, str]:
    """``klio-register argv`` on the instance at ``home``: the project's dagster.yaml (its storage)."""
    os.environ["DAGSTER_HOME"] = home
    os.makedirs(home, exist_ok=True)
    shutil.copy(os.path.join(ROOT, "dagster.yaml"), os.path.join(home, "dagster.yaml"))
    out = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out):
        register(argv)
    return time.perf_counter() - started, out.getvalue().splitlines()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    print(bytecode.summary())
    with tempfile.TemporaryDirectory(prefix="bench-register-") as folder:
        sources = os.path.join(folder, "sources")
        ids = []
        for i in range(args.n):
            label = os.path.join(sources, f"label-{i // 100:04d}")
            if i % 100 == 0:
                os.makedirs(label)
            open(os.path.join(label, f"track-{i % 100:02d}.wav"), "wb").close()
            ids.append(f"label-{i // 100:04d}/track-{i % 100:02d}")
        with open(os.path.join(folder, "ids.txt"), "w") as f:
            f.write("\n".join(ids) + "\n")
        os.environ["KLIO_DATA_ROOT"] = folder  # the sources are where the workers would look for them
        rows = [
            ("folder, first pass", *timed(os.path.join(folder, "home-a"), ["--from", sources])),
            ("folder, again (nothing new)", *timed(os.path.join(folder, "home-a"), ["--from", sources])),
            ("file of IDs, first pass", *timed(os.path.join(folder, "home-b"), ["--file", os.path.join(folder, "ids.txt")])),
        ]
    print(f"| klio-register, {args.n:,} IDs | seconds | IDs/s | summary |")
    print("| --- | --- | --- | --- |")
    for label, seconds, summary in rows:
        print(f"| {label} | {seconds:.1f} | {args.n / seconds:,.0f} | {summary} |")


if __name__ == "__main__":
    main()

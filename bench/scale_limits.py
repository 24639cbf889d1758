"""What grows with the catalogue, past a million: ``.venv/bin/python bench/scale_limits.py
[--sizes 1000000,10000000]``.

In this process, on a fresh SQLite home with the project's ``dagster.yaml``, for each catalogue
size in turn (the catalogue growing from one to the next), the costs that docs/scale.md
extrapolates from:

- registering the IDs (``add_dynamic_partitions`` in chunks of 100,000, the partition-version
  trigger included) and the index database's bytes per ID;
- listing every key (what Dagster does to resolve a run's partitions, once per asset and check
  when the list changed) and the memory that list holds in each process that lists it;
- looking one ID up (``has_dynamic_partition``, what the sensor does per received ID);
- Dagster's cached status of one asset with every ID materialized: it serialises the
  materialized subset (every key) into the asset's row after new materializations, and reads
  it back for each status query.
"""

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import dagster as dg  # noqa: E402
import scale as scale_bench  # noqa: E402  (bench/scale.py, beside this file)

from klio_core.media_ids import PARTITIONS_NAME  # noqa: E402
from klio_dev import bytecode  # noqa: E402

CHUNK = 100_000


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def measure(instance, home: str, size: int) -> dict:
    have = len(instance.get_dynamic_partitions(PARTITIONS_NAME))
    extra = [f"label-{i // 1000:05d}/track-{i % 1000:03d}" for i in range(have, size)]
    figures: dict = {"size": size}
    started = time.perf_counter()
    for i in range(0, len(extra), CHUNK):
        instance.add_dynamic_partitions(PARTITIONS_NAME, extra[i:i + CHUNK])
    figures["register_s"] = time.perf_counter() - started
    figures["index_bytes_per_id"] = os.path.getsize(os.path.join(home, "history", "runs", "index.db")) / size
    del extra
    storage = instance.event_log_storage
    uncached = type(storage).__mro__[1].get_dynamic_partitions  # Dagster's own listing, no cache
    gc.collect()
    figures["list_s"], keys = timed(lambda: uncached(storage, PARTITIONS_NAME))
    figures["list_mb"] = (sys.getsizeof(keys) + sum(sys.getsizeof(key) for key in keys)) / 1e6
    instance.get_dynamic_partitions(PARTITIONS_NAME)  # lists once, into the cache
    figures["cached_list_ms"] = 1000 * timed(lambda: instance.get_dynamic_partitions(PARTITIONS_NAME))[0]
    lookups = [timed(lambda key=key: instance.has_dynamic_partition(PARTITIONS_NAME, key))[0]
               for key in keys[:: max(1, len(keys) // 100)]]
    figures["lookup_ms"] = 1000 * statistics.median(lookups)
    partitions_def = dg.DynamicPartitionsDefinition(name=PARTITIONS_NAME)
    subset = partitions_def.empty_subset().with_partition_keys(keys)
    figures["status_serialize_s"], serialized = timed(subset.serialize)
    figures["status_mb"] = len(serialized) / 1e6
    figures["status_read_s"], _ = timed(lambda: partitions_def.deserialize_subset(serialized))
    return figures


ROWS = [
    ("register the new IDs, s", "register_s", ".1f"),
    ("index database, bytes per ID", "index_bytes_per_id", ".0f"),
    ("list every key (Dagster's listing), s", "list_s", ".2f"),
    ("memory of that list, MB", "list_mb", ".0f"),
    ("the same, cached (a count lookup), ms", "cached_list_ms", ".2f"),
    ("look one ID up, ms (median of 100)", "lookup_ms", ".3f"),
    ("cached status of one asset, every ID materialized: MB", "status_mb", ".1f"),
    ("... serialised, s", "status_serialize_s", ".2f"),
    ("... read back, s", "status_read_s", ".2f"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="catalogue sizes, ascending")
    args = parser.parse_args()
    print(bytecode.summary())
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-limits-") as home:
        with open(os.path.join(ROOT, "dagster.yaml")) as src, open(os.path.join(home, "dagster.yaml"), "w") as dst:
            dst.write(src.read())
        with scale_bench.instance_at(home) as instance:
            for size in sizes:
                results.append(measure(instance, home, size))
                print(results[-1], flush=True)
    print("\n| measure | " + " | ".join(f"{s:,} IDs" for s in sizes) + " |")
    print("| --- |" + " --- |" * len(sizes))
    for label, key, fmt in ROWS:
        print(f"| {label} | " + " | ".join(format(r[key], fmt) for r in results) + " |")


if __name__ == "__main__":
    main()

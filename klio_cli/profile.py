"""``klio-profile``: what one or more media assets cost per item, before a researcher ships them
(Klio's ``klio job profile``). In this process, without Dagster runs and without writing
anything: the selected assets and the media assets upstream of them are called in dependency
order on a few media IDs, each value handed on in memory, with their default config.

    klio-profile mfcc mel_spectrogram_plot --first 5            # the first 5 source IDs under $KLIO_DATA_ROOT
    klio-profile separated_spectrograms --ids a b --output separation.prof

Per asset it prints wall and CPU time per item (median and max), the peak of memory allocated
during a call (``tracemalloc``, which numpy reports to), and the functions with the most time
of their own (``cProfile``). Each call runs twice: once timed, once under the profilers (whose
overhead would distort the times). A ``setup=`` value is built once, as on a worker. The first
ID also runs once untimed before, so one-off costs (numba compiling librosa's kernels, a model's
load) do not count as an item's; ``--no-warmup`` keeps them in. ``--output`` writes the whole
profile in ``pstats`` format, which
``python -m pstats``, snakeviz or gprof2dot open.
"""

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass, field

HOTTEST = 5


@dataclass
class AssetCost:
    name: str
    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    peak_bytes: int = 0
    profile: cProfile.Profile = field(default_factory=cProfile.Profile)


def profile_items(chain: Sequence, store, media_ids: Sequence[str]) -> dict[str, AssetCost]:
    """Each function of ``chain`` (``MediaAsset``s, upstream first) on each media ID, called as a
    worker calls it (``pipelines.graph``), with its default config."""
    from klio_core.media_types import SourceMedia
    from pipelines.graph import call_kwargs, inputs_in_memory, outputs_of

    tasks = [media.task(None) for media in chain]
    costs = {task.name: AssetCost(task.name) for task in tasks}
    for media_id in media_ids:
        found = store.read_source(media_id)
        if found is None:
            raise SystemExit(f"no source for media ID {media_id!r} (tried {', '.join(store.source_candidates(media_id))})")
        source = SourceMedia(media_id, *found)
        values: dict = {}
        for task in tasks:
            kwargs = call_kwargs(task, inputs_in_memory(task, source, values))
            cost = costs[task.name]
            wall, cpu = time.perf_counter(), time.process_time()
            value = task.fn(**kwargs)
            cost.wall_ms.append((time.perf_counter() - wall) * 1000)
            cost.cpu_ms.append((time.process_time() - cpu) * 1000)
            tracemalloc.start()
            cost.profile.enable()
            try:
                task.fn(**kwargs)
            finally:
                cost.profile.disable()
                cost.peak_bytes = max(cost.peak_bytes, tracemalloc.get_traced_memory()[1])
                tracemalloc.stop()
            values.update(outputs_of(task, value))
    return costs


def hottest(profile: cProfile.Profile, count: int = HOTTEST) -> list[tuple[str, float]]:
    """The functions with the most time of their own: ``(file:line(function), ms)``."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]  # (file, line, name) -> counts and times
    ranked = sorted(stats.items(), key=lambda kv: -kv[1][2])[:count]
    return [(f"{os.path.basename(path)}:{line}({name})", own * 1000) for (path, line, name), (_, _, own, _, _) in ranked]


def report(costs: dict[str, AssetCost], items: int) -> str:
    lines = [f"{items} item(s), per asset, in dependency order\n",
             "| asset | wall ms p50 | wall ms max | CPU ms p50 | CPU ms max | peak alloc MiB |",
             "| --- | --- | --- | --- | --- | --- |"]
    for c in costs.values():
        lines.append(f"| {c.name} | {statistics.median(c.wall_ms):.1f} | {max(c.wall_ms):.1f} | "
                     f"{statistics.median(c.cpu_ms):.1f} | {max(c.cpu_ms):.1f} | {c.peak_bytes / 2**20:.1f} |")
    for c in costs.values():
        lines.append(f"\n{c.name}: hottest functions (own time, all items)")
        lines += [f"  {ms:8.1f} ms  {where}" for where, ms in hottest(c.profile)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("assets", nargs="+", help="media assets to profile (their upstream runs too)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--ids", nargs="+", help="media IDs to run on")
    which.add_argument("--first", type=int, default=3, help="else the first N source IDs (default 3)")
    parser.add_argument("--output", help="write the whole profile here (pstats format)")
    parser.add_argument("--no-warmup", action="store_true", help="do not run the first ID once untimed first")
    args = parser.parse_args(argv)

    from klio_core.stack_file import stack_environ

    os.environ.update(stack_environ())  # the running stack's data root, unless KLIO_DATA_ROOT says otherwise
    from klio_assets import definitions
    from klio_core.media_ids import InvalidMediaId, validate_media_id
    from pipelines.graph import chain_for

    store = definitions.MEDIA_STORAGE.store()
    media_ids = args.ids or sorted(store.source_ids())[:args.first]
    for media_id in media_ids:  # the edge: every path below derives from these unchecked
        try:
            validate_media_id(media_id)
        except InvalidMediaId as e:
            raise SystemExit(f"klio-profile: {e}") from None
    if not media_ids:
        raise SystemExit(f"no source media under {store.source_location}")
    try:
        chain = chain_for(definitions.MEDIA_ASSETS, args.assets)
    except KeyError as e:
        raise SystemExit(e.args[0]) from None
    if not args.no_warmup:
        profile_items(chain, store, media_ids[:1])
    costs = profile_items(chain, store, media_ids)
    print(report(costs, len(media_ids)))
    if args.output:
        combined = pstats.Stats(*(c.profile for c in costs.values()))
        combined.dump_stats(args.output)
        print(f"\nprofile written to {args.output} (open with: python -m pstats {args.output}, or snakeviz)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

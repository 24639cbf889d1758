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
load) do not count as an item's; ``--no-warmup`` keeps them in. ``--output`` writes the whole profile in ``pstats`` format, which
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


def chain_for(media_assets: Sequence, selected: Sequence[str]) -> list:
    """The selected assets (or functions, for one with several outputs) and every media asset
    upstream of them, in dependency order."""
    producer = {**{a.name: a for a in media_assets}, **{o.asset: a for a in media_assets for o in a.outputs}}
    unknown = [name for name in selected if name not in producer]
    if unknown:
        raise SystemExit(f"unknown media assets: {unknown}; choose from {sorted(producer)}")
    needed, todo = set(), [producer[name] for name in selected]
    while todo:
        media = todo.pop()
        if media.name not in needed:
            needed.add(media.name)
            todo.extend(producer[u] for u in media.upstream if u in producer)
    return [a for a in media_assets if a.name in needed]  # media_assets is in dependency order


def call_kwargs(media, source, values: dict) -> dict:
    """The arguments of ``media``'s function for one item, as a worker passes them: the source
    media or the upstream values computed so far, the default config, and its per-worker values."""
    from pipelines import worker_resources

    kwargs = {i.param: source if i.asset is None else values[i.asset] for i in media.inputs}
    if media.config_cls is not None:
        kwargs["config"] = media.config_cls()
    kwargs.update({param: worker_resources.get(media.name, param, factory) for param, factory in media.setup})
    return kwargs


def warm_up(media_assets: Sequence, seconds: float = 1.0, sample_rate: int = 22050) -> None:
    """Call every media asset's function once on a short noise clip, in memory, writing nothing:
    the process then starts its first real item with librosa's submodules imported, numba's
    kernels compiled, the plot frames made and the ``setup=`` values built."""
    import io

    import numpy as np
    import soundfile

    from klio_assets.media_types import SourceMedia

    wav = io.BytesIO()
    noise = 0.1 * np.random.default_rng(0).standard_normal(int(seconds * sample_rate))
    soundfile.write(wav, noise.astype(np.float32), sample_rate, format="WAV")
    call_chain(media_assets, SourceMedia("warm-up", wav.getvalue(), ".wav"))


def call_chain(media_assets: Sequence, source) -> dict:
    """Every function of ``media_assets`` (in dependency order) on one source, each value handed
    on in memory; the values by asset."""
    values: dict = {}
    for media in media_assets:
        value = media.fn(**call_kwargs(media, source, values))
        values.update(value if media.returns_dict else {media.name: value})
    return values


def profile_items(chain: Sequence, store, media_ids: Sequence[str]) -> dict[str, AssetCost]:
    from klio_assets.media_types import SourceMedia

    costs = {media.name: AssetCost(media.name) for media in chain}
    for media_id in media_ids:
        found = store.read_source(media_id)
        if found is None:
            raise SystemExit(f"no source for media ID {media_id!r} (tried {', '.join(store.source_candidates(media_id))})")
        source = SourceMedia(media_id, *found)
        values: dict = {}
        for media in chain:
            kwargs = call_kwargs(media, source, values)
            cost = costs[media.name]
            wall, cpu = time.perf_counter(), time.process_time()
            value = media.fn(**kwargs)
            cost.wall_ms.append((time.perf_counter() - wall) * 1000)
            cost.cpu_ms.append((time.process_time() - cpu) * 1000)
            tracemalloc.start()
            cost.profile.enable()
            try:
                media.fn(**kwargs)
            finally:
                cost.profile.disable()
                cost.peak_bytes = max(cost.peak_bytes, tracemalloc.get_traced_memory()[1])
                tracemalloc.stop()
            values.update(value if media.returns_dict else {media.name: value})
    return costs


def hottest(profile: cProfile.Profile, count: int = HOTTEST) -> list[tuple[str, float]]:
    """The functions with the most time of their own: ``(file:line(function), ms)``."""
    stats = pstats.Stats(profile).stats
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

    from klio_assets import definitions

    store = definitions.MEDIA_STORAGE.store()
    media_ids = args.ids or sorted(store.source_ids())[:args.first]
    if not media_ids:
        raise SystemExit(f"no source media under {store.source_location}")
    chain = chain_for(definitions.MEDIA_ASSETS, args.assets)
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

"""The media asset graph, in one place: which assets a selection needs (the upstream closure),
the order functions run in, and how a per-item function is called.

Workers (``pipelines.items``), ``klio-profile``, the warm-up of the dev stack's workers, the
sensor (``sensors.planning``) and the asset definitions all use these, so none of them can drift
from what a worker does.
"""

import dataclasses
import graphlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from klio_core.media_types import SourceMedia
from pipelines import worker_resources
from pipelines.specs import ItemSpec, ItemTask

S = TypeVar("S", bound=ItemSpec)


def upstream_closure(upstream: Mapping[str, Sequence[str]], selected: Iterable[str]) -> set[str]:
    """``selected`` and every asset upstream of them. ``upstream`` maps each media asset to the
    assets it reads; an upstream that is not a key (another code location's) is not followed."""
    needed: set[str] = set()
    pending = list(selected)
    while pending:
        asset = pending.pop()
        if asset not in needed:
            needed.add(asset)
            pending.extend(u for u in upstream[asset] if u in upstream)
    return needed


def downstream_of(upstream: Mapping[str, Sequence[str]], asset: str) -> set[str]:
    """The media assets of ``upstream``'s keys that read ``asset``, directly or through others."""
    found: set[str] = set()
    grew = True
    while grew:
        grew = False
        for key, reads in upstream.items():
            if key not in found and (asset in reads or found.intersection(reads)):
                found.add(key)
                grew = True
    return found


def asset_graph(specs: Sequence[ItemSpec]) -> dict[str, tuple[str, ...]]:
    """Every media asset (each output of each function) -> the media assets it reads."""
    return {o.asset: tuple(spec.upstream) for spec in specs for o in spec.outputs}


def in_dependency_order(specs: Sequence[S], reserved: Iterable[str] = ()) -> list[S]:
    """``specs`` ordered upstream first. Raises ``ValueError`` for two functions or outputs of
    one name, a name in ``reserved``, or a cycle."""
    reserved = set(reserved)
    nodes: dict[str, S] = {}
    producer: dict[str, str] = {}
    for spec in specs:
        for name in [spec.name, *(o.asset for o in spec.outputs)]:
            if name in reserved:
                raise ValueError(f"'{name}' is reserved in run config; rename media asset '{spec.name}'")
        if spec.name in nodes:
            raise ValueError(f"two media assets are named '{spec.name}'")
        nodes[spec.name] = spec
        for o in spec.outputs:
            if o.asset in producer:
                raise ValueError(f"two media assets are named '{o.asset}'")
            producer[o.asset] = spec.name
    graph = {spec.name: [producer[u] for u in spec.upstream if u in producer] for spec in specs}
    try:
        return [nodes[n] for n in graphlib.TopologicalSorter(graph).static_order()]
    except graphlib.CycleError as e:
        raise ValueError(f"media assets depend on each other in a cycle: {e.args[1]}") from e


def dependency_levels(ordered: Sequence[S]) -> list[list[str]]:
    """The names of ``ordered``'s functions (upstream first) by level: a function's level is one
    past the highest of the functions it reads from (0 if it reads none of them), so a level
    reads only the levels before it."""
    producer = {o.asset: spec.name for spec in ordered for o in spec.outputs}
    depth: dict[str, int] = {}
    for spec in ordered:
        depth[spec.name] = 1 + max((depth[producer[u]] for u in spec.upstream if u in producer), default=-1)
    levels: list[list[str]] = [[] for _ in range(1 + max(depth.values(), default=-1))]
    for spec in ordered:
        levels[depth[spec.name]].append(spec.name)
    return levels


def chain_for(ordered: Sequence[S], selected: Sequence[str]) -> list[S]:
    """The functions (of ``ordered``, upstream first) that produce the ``selected`` assets or are
    named by them, and every function upstream of those, in order. ``KeyError`` names the
    unknown names."""
    by_function = {spec.name: [o.asset for o in spec.outputs] for spec in ordered}
    graph = asset_graph(ordered)
    unknown = [name for name in selected if name not in graph and name not in by_function]
    if unknown:
        raise KeyError(f"unknown media assets: {unknown}; choose from {sorted({*graph, *by_function})}")
    wanted = [asset for name in selected for asset in by_function.get(name, [name])]
    needed = upstream_closure(graph, wanted)
    return [spec for spec in ordered if any(o.asset in needed for o in spec.outputs)]


def call_kwargs(task: ItemTask, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of ``task``'s function for one item: its inputs by parameter name, its
    config, and its per-worker ``setup=`` values (built on first use in this process)."""
    kwargs = dict(inputs)
    if task.config is not None:
        kwargs["config"] = task.config
    for param, factory in task.setup:
        kwargs[param] = worker_resources.get(task.name, param, factory)
    return kwargs


def inputs_in_memory(task: ItemTask, source: SourceMedia, values: Mapping[str, Any]) -> dict[str, Any]:
    """``task``'s inputs from values in memory: the source media and upstream values by asset."""
    return {i.param: source if i.asset is None else values[i.asset] for i in task.inputs}


def outputs_of(task: ItemTask, value: Any) -> dict[str, Any]:
    """The function's return value as ``{asset: value}``."""
    return value if task.returns_dict else {task.outputs[0].asset: value}


def call_chain(tasks: Sequence[ItemTask], source: SourceMedia) -> dict[str, Any]:
    """Every function of ``tasks`` (upstream first) on one source, called as a worker calls it,
    each value handed on in memory, writing nothing; the values by asset."""
    values: dict[str, Any] = {}
    for task in tasks:
        values.update(outputs_of(task, task.fn(**call_kwargs(task, inputs_in_memory(task, source, values)))))
    return values


def selected_assets(upstream: Mapping[str, Sequence[str]], recipients: Sequence[str],
                    announced: str | None = None) -> set[str]:
    """What one event asks of the media assets ``upstream`` maps: a bottom-up event (with
    ``recipients``), the recipients and everything upstream of them (what exists is skipped as
    fresh, so only what is missing is produced); a top-down one, every asset, or, when it
    announces an output of another code location (``announced``, Klio's event output of an
    upstream job), every asset downstream of that output."""
    if recipients:
        return upstream_closure(upstream, recipients)
    if announced is not None and announced not in upstream:
        return downstream_of(upstream, announced)
    return set(upstream)


def tasks_for_event(ordered: Sequence[ItemTask], recipients: Sequence[str], force: bool,
                    announced: str | None = None) -> list[ItemTask]:
    """The tasks one event runs (``selected_assets``), upstream first; forced if the event is."""
    needed = selected_assets(asset_graph(ordered), recipients, announced)
    ordered = [task for task in ordered if any(o.asset in needed for o in task.outputs)]
    return [dataclasses.replace(task, force=True) if force else task for task in ordered]

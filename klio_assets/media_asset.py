"""``@media_asset``: turn a function of ONE media ID's data into a Dagster asset over all of them.

The author writes what happens to one item::

    @media_asset
    def loudness(waveform: Waveform, config: LoudnessConfig) -> np.ndarray:
        return librosa.feature.rms(y=waveform.samples, frame_length=config.frame_length)

and lists it with the others in ``build_media_assets([...])`` (``klio_assets/definitions.py``).

Parameters name the inputs: a parameter annotated ``SourceMedia`` receives the ID's source file
(Klio's data input); any other parameter receives the upstream media asset of the same name
(or the one named in ``ins``), decoded by its annotation; ``config`` (a ``dagster.Config``
subclass) receives the asset's run config. The return annotation picks the stored format
(``klio_assets.codecs``).

The framework owns the rest. Every media asset is partitioned by ``media_ids``. A run over any
set of partitions runs each selected asset as ONE Beam pipeline over all of the run's IDs (on
the ``beam_runner`` resource, reading and writing through ``media_storage``), upstream before
downstream. Each written output becomes a materialization of exactly its partition, with
metadata (path, size, shape, duration, sample rate, an inline plot); an ID whose input is
missing or whose processing raised is reported with its reason and is not marked materialized,
while the other IDs carry on.

Why one multi-asset: Dagster marks every partition of a multi-partition step materialized when
the step yields its output, and skips downstream steps when it does not. So the media assets of a
code location share one subsettable step that yields per-ID materialization events itself.
"""

import graphlib
import inspect
import typing
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import dagster as dg

from klio_assets.codecs import Codec, codec_for
from klio_assets.media_types import SourceMedia
from klio_assets.partitions import media_ids
from klio_assets.run_tags import FORCE_TAG, PING_TAG, tag_is_true
from pipelines.items import FAILED, MATERIALIZED, SKIPPED, STATES, ItemInput, ItemResult, ItemTask

DEFAULT_MAX_IDS_PER_RUN = 500
"""How many media IDs one run (and so one Beam pipeline per asset) takes at most in a backfill."""

MEDIA_RESOURCE_KEYS = {"media_storage", "beam_runner"}


@dataclass(frozen=True)
class MediaAsset:
    """A per-item function and what the framework derived from its signature."""

    name: str
    fn: Callable
    inputs: tuple[ItemInput, ...]
    output: Codec
    config_cls: type[dg.Config] | None
    description: str | None
    code_version: str | None
    group_name: str

    @property
    def upstream(self) -> list[str]:
        return [i.asset for i in self.inputs if i.asset is not None]

    def task(self, raw_config: Mapping | None, force: bool = False) -> ItemTask:
        config = self.config_cls(**(raw_config or {})) if self.config_cls else None
        return ItemTask(self.name, self.fn, self.inputs, self.output, config, force)

    def spec(self) -> dg.AssetSpec:
        return dg.AssetSpec(
            key=self.name,
            deps=self.upstream,
            description=self.description,
            code_version=self.code_version,
            group_name=self.group_name,
            partitions_def=media_ids,
            skippable=True,
            kinds={"beam", "python"},
            metadata={
                "per_item_function": f"{self.fn.__module__}.{self.fn.__qualname__}",
                "stored_as": f"<root>/{self.name}/<media_id>{self.output.suffix}",
            },
        )


def media_asset(
    fn: Callable | None = None,
    *,
    name: str | None = None,
    ins: Mapping[str, str] | None = None,
    description: str | None = None,
    code_version: str | None = None,
    group_name: str = "media",
) -> MediaAsset | Callable[[Callable], MediaAsset]:
    """Decorator: declare a media asset from a per-item function (see the module docstring).

    Args:
        name: the asset's name; default: the function's name.
        ins: parameter name -> upstream asset name, where they differ.
        description: shown in the UI; default: the function's docstring.
        code_version: bump it when the function's behaviour changes.
        group_name: the UI group.
    """

    def declare(fn: Callable) -> MediaAsset:
        return _declare(fn, name or fn.__name__, dict(ins or {}),
                        description or inspect.getdoc(fn), code_version, group_name)

    return declare(fn) if fn is not None else declare


def _declare(fn, asset_name, ins, description, code_version, group_name) -> MediaAsset:
    where = f"media asset '{asset_name}' ({fn.__module__}.{fn.__qualname__})"
    hints = typing.get_type_hints(fn)
    if "return" not in hints:
        raise TypeError(f"{where}: annotate the return type (np.ndarray, Waveform, PlotImage or bytes)")
    output = codec_for(hints["return"], f"{where} return value")

    config_cls = None
    inputs = []
    for param in inspect.signature(fn).parameters:
        annotation = hints.get(param)
        if param == "config":
            if not (inspect.isclass(annotation) and issubclass(annotation, dg.Config)):
                raise TypeError(f"{where}: parameter 'config' must be annotated with a dagster.Config subclass")
            config_cls = annotation
        elif annotation is SourceMedia:
            inputs.append(ItemInput(param, None, SourceMedia))
        elif annotation is None:
            raise TypeError(f"{where}: annotate parameter '{param}' with the upstream value's type")
        else:
            inputs.append(ItemInput(param, ins.get(param, param),
                                    codec_for(annotation, f"{where} parameter '{param}'")))
    unknown = set(ins) - {i.param for i in inputs}
    if unknown:
        raise TypeError(f"{where}: ins names parameters the function does not have: {sorted(unknown)}")
    if not inputs:
        raise TypeError(f"{where}: needs at least one input (a SourceMedia parameter or an upstream asset)")
    return MediaAsset(asset_name, fn, tuple(inputs), output, config_cls, description,
                      code_version, group_name)


def _in_dependency_order(media_assets: Sequence[MediaAsset]) -> list[MediaAsset]:
    by_name = {}
    for a in media_assets:
        if a.name in by_name:
            raise ValueError(f"two media assets are named '{a.name}'")
        by_name[a.name] = a
    graph = {a.name: [u for u in a.upstream if u in by_name] for a in media_assets}
    try:
        return [by_name[n] for n in graphlib.TopologicalSorter(graph).static_order()]
    except graphlib.CycleError as e:
        raise ValueError(f"media assets depend on each other in a cycle: {e.args[1]}") from e


def build_media_assets(
    media_assets: Sequence[MediaAsset],
    *,
    name: str = "media_assets",
    max_ids_per_run: int = DEFAULT_MAX_IDS_PER_RUN,
) -> dg.AssetsDefinition:
    """All of a code location's media assets as one subsettable Dagster multi-asset.

    Args:
        media_assets: every ``@media_asset`` of the code location (upstream ones from other code
            locations are referenced by name and need not be listed).
        name: the step's name in runs.
        max_ids_per_run: a backfill puts at most this many IDs in one run.

    Run config: one optional section per asset, e.g.
    ``{"ops": {"media_assets": {"config": {"waveform": {"sample_rate": 16000}}}}}``.
    """
    ordered = _in_dependency_order(media_assets)
    config_schema = {a.name: a.config_cls.to_config_schema().as_field()
                     for a in ordered if a.config_cls is not None}

    with warnings.catch_warnings():  # backfill_policy is marked beta; it is what bounds runs per backfill
        warnings.simplefilter("ignore", dg.BetaWarning)

        @dg.multi_asset(
            name=name,
            specs=[a.spec() for a in ordered],
            can_subset=True,
            partitions_def=media_ids,
            config_schema=config_schema,
            required_resource_keys=MEDIA_RESOURCE_KEYS,
            backfill_policy=dg.BackfillPolicy.multi_run(max_ids_per_run),
        )
        def _materialize(context: dg.AssetExecutionContext):
            ids = list(context.partition_keys)
            selected = [a for a in ordered if dg.AssetKey(a.name) in context.selected_asset_keys]
            if tag_is_true(context.run.tags, PING_TAG):
                yield from _ping(context, selected, ids)
                return
            force = tag_is_true(context.run.tags, FORCE_TAG)
            store = context.resources.media_storage.store()
            runner = context.resources.beam_runner
            any_done, problems = False, {}
            for media in selected:
                context.log.info(f"'{media.name}': one Beam pipeline on {runner.runner} over "
                                 f"{len(ids)} media IDs{' (forced)' if force else ''}")
                task = media.task(context.op_config.get(media.name), force=force)
                outcome = runner.run(task, store, ids, context.run_id)
                for event in _report(context, media.name, ids, outcome.results, outcome.counters):
                    if isinstance(event, dg.AssetMaterialization) or event.metadata["status"].value == SKIPPED:
                        any_done = True
                    else:
                        problems[f"{media.name} [{event.partition}]"] = event.metadata["reason"].value
                    yield event
            if problems and not any_done:
                raise dg.Failure(description="no media ID was materialized",
                                 metadata={"problems": dg.MetadataValue.json(problems)})

    return _materialize


def _ping(context: dg.AssetExecutionContext, selected: Sequence[MediaAsset], ids: list[str]):
    """Klio's ping: record that the event reached each asset it would have run, and do nothing else."""
    for media in selected:
        context.log.info(f"ping: '{media.name}' reached for {len(ids)} media IDs; nothing processed")
        for media_id in ids:
            yield dg.AssetObservation(asset_key=media.name, partition=media_id,
                                      metadata={"status": "ping", "reason": "event reached this asset; "
                                                "nothing was processed (ping)"})


def _report(context: dg.AssetExecutionContext, asset_name: str, ids: list[str],
            results: list[ItemResult], counters: dict[str, int]):
    """Yield one materialization per written ID and one observation per ID that was not written
    (skipped because its output exists, dropped, or failed)."""
    by_id = {r.media_id: r for r in results}
    not_written = {}
    for media_id in ids:
        result = by_id.get(media_id)
        if result is None:
            not_written[media_id] = (FAILED, "no result came back from the pipeline")
        elif result.status == MATERIALIZED:
            yield dg.AssetMaterialization(asset_key=asset_name, partition=media_id,
                                          metadata=_materialization_metadata(asset_name, result))
        else:
            not_written[media_id] = (result.status, result.reason)
    for media_id, (status, reason) in not_written.items():
        if status != SKIPPED:
            context.log.error(f"'{asset_name}' [{media_id}] {status}: {reason}")
        yield dg.AssetObservation(asset_key=asset_name, partition=media_id,
                                  metadata={"status": status, "reason": reason})
    context.log.info(f"'{asset_name}': {len(ids)} media IDs: "
                     f"{ {state: counters.get(state, 0) for state in STATES} }")


def _materialization_metadata(asset_name: str, result: ItemResult) -> dict:
    meta = dict(result.metadata)
    out: dict = {"path": dg.MetadataValue.path(result.uri), "compute_ms": round(result.seconds * 1000, 1)}
    png = meta.pop("png_base64", None)
    if png is not None:
        out["plot"] = dg.MetadataValue.md(f"![{asset_name} {result.media_id}](data:image/png;base64,{png})")
    if "shape" in meta:
        meta["shape"] = str(tuple(meta["shape"]))
    out.update(meta)
    return out

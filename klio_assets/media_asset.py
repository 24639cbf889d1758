"""``@media_asset``: turn a function of ONE media ID's data into a Dagster asset over all of them.

The author writes what happens to one item::

    @media_asset(code_version="1", retries=2, timeout_s=60)
    def loudness(waveform: Waveform, config: LoudnessConfig) -> np.ndarray:
        return librosa.feature.rms(y=waveform.samples, frame_length=config.frame_length)

and lists it with the others in ``build_media_assets([...])`` (``klio_assets/definitions.py``).
A function with several outputs declares them, ``outs={"foreground": np.ndarray, ...}``, and
returns a dict; each output is its own asset.

Parameters name the inputs: a parameter annotated ``SourceMedia`` receives the ID's source file
(Klio's data input); any other parameter receives the upstream media asset of the same name
(or the one named in ``ins``), decoded by its annotation; ``config`` (a ``dagster.Config``
subclass) receives the asset's run config. The return annotation picks the stored format
(``klio_assets.codecs``).

The framework owns the rest. Every media asset is partitioned by ``media_ids``. A run over any
set of partitions runs each selected asset as ONE Beam pipeline over all of the run's IDs (on
the ``beam_runner`` resource, reading and writing through ``media_storage``), upstream before
downstream. Each written output becomes a materialization of exactly its partition, with
metadata (path, size, shape, duration, sample rate, an inline plot) and its checks' results; an
output that exists from the same code version and config is skipped unless forced; an ID whose
input is missing (dropped) or whose processing failed is reported with its reason and is not
marked materialized, while the other IDs carry on. The step fails at the end if any item failed,
so the UI shows exactly those partitions as failed.

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
import numpy as np

from klio_assets.checks import finite_values
from klio_assets.codecs import NDARRAY, WAVEFORM, codec_for
from klio_assets.media_types import SourceMedia
from klio_assets.partitions import media_ids
from klio_assets.run_tags import FORCE_TAG, PING_TAG, tag_is_true
from pipelines.items import (DROPPED, FAILED, MATERIALIZED, SKIPPED, STATES, ItemCheck, ItemInput,
                             ItemOutput, ItemResult, ItemTask)
from sensors.wire import MediaEvent, encode_event

DEFAULT_MAX_IDS_PER_RUN = 500
"""How many media IDs one run (and so one Beam pipeline per asset) takes at most in a backfill."""

RESERVED_CONFIG_KEYS = {"force"}
MAX_LISTED_PROBLEMS = 200


@dataclass(frozen=True)
class MediaAsset:
    """A per-item function and what the framework derived from its signature."""

    name: str
    fn: Callable
    inputs: tuple[ItemInput, ...]
    outputs: tuple[ItemOutput, ...]
    config_cls: type[dg.Config] | None
    description: str | None
    code_version: str | None
    group_name: str
    timeout_s: float | None = None
    retries: int = 0
    retry_backoff_s: float = 1.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    event_output: str | None = None
    returns_dict: bool = False  # declared with outs

    @property
    def upstream(self) -> list[str]:
        return [i.asset for i in self.inputs if i.asset is not None]

    def task(self, raw_config: Mapping | None, force: bool = False,
             outputs: Sequence[ItemOutput] | None = None, run_id: str | None = None) -> ItemTask:
        config = self.config_cls(**(raw_config or {})) if self.config_cls else None
        return ItemTask(self.name, self.fn, self.inputs, tuple(outputs or self.outputs), config,
                        self.code_version, force, self.timeout_s, self.retries, self.retry_backoff_s,
                        self.retry_on, self.returns_dict, run_id)

    def specs(self) -> list[dg.AssetSpec]:
        return [dg.AssetSpec(
            key=o.asset,
            deps=self.upstream,
            description=self.description,
            code_version=self.code_version,
            group_name=self.group_name,
            partitions_def=media_ids,
            skippable=True,
            kinds={"beam", "python"},
            metadata={
                "per_item_function": f"{self.fn.__module__}.{self.fn.__qualname__}",
                "stored_as": f"<root>/{o.asset}/<media_id>{o.codec.suffix}",
                **({"event_output": self.event_output} if self.event_output else {}),
                **({"timeout_s": self.timeout_s} if self.timeout_s else {}),
                **({"retries": self.retries} if self.retries else {}),
            },
        ) for o in self.outputs]

    def check_specs(self) -> list[dg.AssetCheckSpec]:
        return [dg.AssetCheckSpec(c.name, asset=o.asset, partitions_def=media_ids, description=c.description)
                for o in self.outputs for c in o.checks]


def media_asset(
    fn: Callable | None = None,
    *,
    name: str | None = None,
    outs: Mapping[str, type] | None = None,
    ins: Mapping[str, str] | None = None,
    checks: Sequence[ItemCheck] | Mapping[str, Sequence[ItemCheck]] = (),
    description: str | None = None,
    code_version: str | None = None,
    group_name: str = "media",
    timeout_s: float | None = None,
    retries: int = 0,
    retry_backoff_s: float = 1.0,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    event_output: str | None = None,
) -> MediaAsset | Callable[[Callable], MediaAsset]:
    """Decorator: declare a media asset from a per-item function (see the module docstring).

    Args:
        name: the asset's name (or, with ``outs``, the name of its config section); default: the
            function's name.
        outs: output asset name -> value type, for a function that returns a dict of several.
        ins: parameter name -> upstream asset name, where they differ.
        checks: extra per-item checks (``klio_assets.checks``); with ``outs``, a mapping of
            output name -> checks. ``finite_values`` is added to every array or waveform output.
        description: shown in the UI; default: the function's docstring.
        code_version: bump it when the function's behaviour changes; outputs made by another code
            version (or config) are recomputed, fresh ones are skipped.
        group_name: the UI group.
        timeout_s: fail an attempt that takes longer than this (Klio's ``@timeout``).
        retries: attempts after the first that fail with one of ``retry_on`` or time out
            (Klio's ``@retry``); waits ``retry_backoff_s * 2 ** (n - 1)`` before retry n.
        event_output: ``"klio"`` or ``"json"``: publish one message per materialized (or fresh)
            ID to the ``pubsub`` resource's ``output_topic`` (Klio's event output).
    """

    def declare(fn: Callable) -> MediaAsset:
        return _declare(fn, name or fn.__name__, dict(outs or {}), dict(ins or {}), checks,
                        description or inspect.getdoc(fn), code_version, group_name, timeout_s,
                        retries, retry_backoff_s, tuple(retry_on), event_output)

    return declare(fn) if fn is not None else declare


def _declare(fn, asset_name, outs, ins, checks, description, code_version, group_name, timeout_s,
             retries, retry_backoff_s, retry_on, event_output) -> MediaAsset:
    where = f"media asset '{asset_name}' ({fn.__module__}.{fn.__qualname__})"
    hints = typing.get_type_hints(fn)
    if event_output not in (None, "klio", "json"):
        raise ValueError(f"{where}: event_output must be 'klio', 'json' or None, not {event_output!r}")
    if retries < 0 or (timeout_s is not None and timeout_s <= 0):
        raise ValueError(f"{where}: retries must be >= 0 and timeout_s > 0")
    if outs:
        codecs = {out: codec_for(t, f"{where} output '{out}'") for out, t in outs.items()}
        by_output = dict(checks) if isinstance(checks, Mapping) else {}
        if not isinstance(checks, Mapping) and checks:
            raise TypeError(f"{where}: with outs, give checks as a mapping of output name -> checks")
        unknown = set(by_output) - set(outs)
        if unknown:
            raise TypeError(f"{where}: checks name outputs it does not have: {sorted(unknown)}")
    else:
        if "return" not in hints:
            raise TypeError(f"{where}: annotate the return type (np.ndarray, Waveform, PlotImage or bytes)")
        if isinstance(checks, Mapping):
            raise TypeError(f"{where}: checks is a mapping only for functions with outs")
        codecs = {asset_name: codec_for(hints["return"], f"{where} return value")}
        by_output = {asset_name: checks}
    outputs = tuple(
        ItemOutput(out, codec, ((finite_values(),) if codec in (NDARRAY, WAVEFORM) else ()) + tuple(by_output.get(out, ())))
        for out, codec in codecs.items())

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
    return MediaAsset(asset_name, fn, tuple(inputs), outputs, config_cls, description, code_version,
                      group_name, timeout_s, retries, retry_backoff_s, retry_on, event_output, bool(outs))


def _in_dependency_order(media_assets: Sequence[MediaAsset]) -> list[MediaAsset]:
    nodes, producer = {}, {}
    for a in media_assets:
        for name in [a.name, *(o.asset for o in a.outputs)]:
            if name in RESERVED_CONFIG_KEYS:
                raise ValueError(f"'{name}' is reserved in run config; rename media asset '{a.name}'")
        if a.name in nodes:
            raise ValueError(f"two media assets are named '{a.name}'")
        nodes[a.name] = a
        for o in a.outputs:
            if o.asset in producer:
                raise ValueError(f"two media assets are named '{o.asset}'")
            producer[o.asset] = a.name
    graph = {a.name: [producer[u] for u in a.upstream if u in producer] for a in media_assets}
    try:
        return [nodes[n] for n in graphlib.TopologicalSorter(graph).static_order()]
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

    Run config: ``force`` (recompute fresh outputs too) and one optional section per asset, e.g.
    ``{"ops": {"media_assets": {"config": {"force": true, "waveform": {"sample_rate": 16000}}}}}``.
    """
    ordered = _in_dependency_order(media_assets)
    config_schema = {
        "force": dg.Field(bool, default_value=False, is_required=False,
                          description="Recompute outputs even when they exist from the same code version and config."),
        **{a.name: a.config_cls.to_config_schema().as_field() for a in ordered if a.config_cls is not None},
    }
    resource_keys = {"media_storage", "beam_runner"} | ({"pubsub"} if any(a.event_output for a in ordered) else set())

    with warnings.catch_warnings():  # backfill_policy and partitioned checks are marked beta/preview
        warnings.simplefilter("ignore", dg.BetaWarning)
        warnings.simplefilter("ignore", dg.PreviewWarning)

        @dg.multi_asset(
            name=name,
            specs=[spec for a in ordered for spec in a.specs()],
            check_specs=[spec for a in ordered for spec in a.check_specs()],
            can_subset=True,
            partitions_def=media_ids,
            config_schema=config_schema,
            required_resource_keys=resource_keys,
            backfill_policy=dg.BackfillPolicy.multi_run(max_ids_per_run),
        )
        def _materialize(context: dg.AssetExecutionContext):
            yield from _run_media_assets(context, ordered)

    return _materialize


def _run_media_assets(context: dg.AssetExecutionContext, ordered: Sequence[MediaAsset]):
    ids = list(context.partition_keys)
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    work = [(a, [o for o in a.outputs if o.asset in selected]) for a in ordered]
    work = [(a, outputs) for a, outputs in work if outputs]
    if tag_is_true(context.run.tags, PING_TAG):
        yield from _ping(context, [o.asset for _, outputs in work for o in outputs], ids)
        return
    force = tag_is_true(context.run.tags, FORCE_TAG) or context.op_config.get("force", False)
    store = context.resources.media_storage.store()
    runner = context.resources.beam_runner
    done, dropped, failed = 0, {}, {}  # (asset, media ID) -> reason
    for media, outputs in work:
        context.log.info(f"'{media.name}': one Beam pipeline on {runner.runner} over "
                         f"{len(ids)} media IDs{' (forced)' if force else ''}")
        task = media.task(context.op_config.get(media.name), force, outputs, context.run_id)
        outcome = runner.run(task, store, ids, context.run_id, on_progress=lambda n, total, name=media.name:
                             context.log.info(f"'{name}': {n} / {total} media IDs done"))
        results = _results_by_id(ids, outcome.results)
        for result in results.values():
            if result.status in (MATERIALIZED, SKIPPED):
                done += 1
            elif result.status == DROPPED:
                dropped[(media.name, result.media_id)] = result.reason
            else:
                failed[(media.name, result.media_id)] = result.reason
        for output in outputs:
            yield from _report(context, output, results, outcome.counters)
        if media.event_output:
            _publish_event_output(context, media, outputs, results)
    if failed or (dropped and not done):
        raise _run_failure(failed, dropped, any_done=bool(done))


def _run_failure(failed: dict[tuple[str, str], str], dropped: dict[tuple[str, str], str],
                 any_done: bool) -> dg.Failure:
    """The step's failure: media IDs counted once each (an ID whose ``mfcc`` failed is usually
    dropped by ``mfcc_plot`` too), then per asset, with up to 200 reasons."""
    failed_ids = {media_id for _, media_id in failed}
    dropped_ids = {media_id for _, media_id in dropped} - failed_ids
    per_asset: dict[str, dict[str, int]] = {}
    for state, problems in (("failed", failed), ("dropped", dropped)):
        for asset, _ in problems:
            counts = per_asset.setdefault(asset, {"failed": 0, "dropped": 0})
            counts[state] += 1
    listed = {f"{asset} [{media_id}]": reason
              for (asset, media_id), reason in list({**failed, **dropped}.items())[:MAX_LISTED_PROBLEMS]}
    by_asset = ", ".join(f"{asset}: {', '.join(f'{n} {state}' for state, n in counts.items() if n)}"
                         for asset, counts in per_asset.items())
    head = (f"{len(failed_ids)} media ID(s) failed" if failed_ids else "no media ID was materialized") + (
        f" and {len(dropped_ids)} more were dropped" if dropped_ids else "")
    return dg.Failure(
        description=f"{head} ({by_asset})" + ("; the others were materialized" if any_done else "")
        + ". Reasons per asset [media ID] are in the metadata and in each asset's events.",
        metadata={"failed_media_ids": len(failed_ids), "dropped_media_ids": len(dropped_ids),
                  "per_asset": dg.MetadataValue.json(per_asset), "problems": dg.MetadataValue.json(listed)})


def _results_by_id(ids: list[str], results: list[ItemResult]) -> dict[str, ItemResult]:
    by_id = {r.media_id: r for r in results}
    return {i: by_id.get(i) or ItemResult(i, FAILED, "no result came back from the pipeline") for i in ids}


def _ping(context: dg.AssetExecutionContext, assets: Sequence[str], ids: list[str]):
    """Klio's ping: record that the event reached each asset it would have run, and do nothing else."""
    for asset in assets:
        context.log.info(f"ping: '{asset}' reached for {len(ids)} media IDs; nothing processed")
        for media_id in ids:
            yield dg.AssetObservation(asset_key=asset, partition=media_id,
                                      metadata={"status": "ping", "reason": "event reached this asset; "
                                                "nothing was processed (ping)"})


def _report(context: dg.AssetExecutionContext, output: ItemOutput, results: dict[str, ItemResult],
            counters: dict[str, int]):
    """Per ID: a materialization and its check evaluations, or an observation saying why not.
    A skipped (fresh) output that Dagster has no materialization of, because the run that wrote
    it died before reporting it, is reported now, from its record. Then one observation for the
    run: counters and per-item timing."""
    asset = output.asset
    skipped = [media_id for media_id, r in results.items() if r.status == SKIPPED]
    unreported = set(_unreported(context.instance, asset, {m: results[m].outputs[asset]["record"] for m in skipped}))
    for media_id, result in results.items():
        if result.status == MATERIALIZED or media_id in unreported:
            written = result.outputs[asset]
            recovered = result.status == SKIPPED
            checks = written["record"].get("checks", []) if recovered else written["checks"]
            yield dg.AssetMaterialization(asset_key=asset, partition=media_id,
                                          metadata=_materialization_metadata(asset, media_id, written, result))
            for check in checks:
                yield dg.AssetCheckEvaluation(asset_key=dg.AssetKey(asset), check_name=check["name"],
                                              passed=check["passed"], partition=media_id,
                                              metadata={"detail": check["detail"]})
        else:
            if result.status != SKIPPED:
                context.log.error(f"'{asset}' [{media_id}] {result.status}: {result.reason}")
            yield dg.AssetObservation(asset_key=asset, partition=media_id,
                                      metadata={"status": result.status, "reason": result.reason})
    if unreported:
        context.log.warning(f"'{asset}': {len(unreported)} fresh output(s) had no materialization in Dagster "
                            "(their run stopped before reporting them); recorded now from storage")
    ms = np.array([r.seconds * 1000 for r in results.values()] or [0.0])
    summary = {**{state: counters.get(state, 0) for state in ("received", *STATES, "retried")},
               "recovered": len(unreported),
               **{f"item_ms_p{p}": round(float(np.percentile(ms, p)), 1) for p in (50, 90, 99)},
               "item_ms_max": round(float(ms.max()), 1), "run_id": context.run_id}
    context.log.info(f"'{asset}': {summary}")
    yield dg.AssetObservation(asset_key=asset, metadata=summary)


RECONCILE_BATCH = 500


def _unreported(instance: dg.DagsterInstance, asset: str, records: Mapping[str, dict]) -> list[str]:
    """The media IDs among ``records`` (fresh outputs, by ID) whose latest materialization in
    Dagster is missing or reports another output version than the stored record."""
    key, unreported = dg.AssetKey(asset), []
    ids = list(records)
    for start in range(0, len(ids), RECONCILE_BATCH):
        chunk = ids[start:start + RECONCILE_BATCH]
        latest: dict[str, str | None] = {}
        cursor = None
        while len(latest) < len(chunk):
            page = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, asset_partitions=chunk), limit=1000, cursor=cursor)
            for record in page.records:  # newest first
                version = record.asset_materialization.metadata.get("output_version")
                latest.setdefault(record.partition_key, version.value if version else None)
            if not page.has_more:
                break
            cursor = page.cursor
        for media_id in chunk:
            # A materialization from before output versions were reported counts as reported.
            if media_id not in latest or latest[media_id] not in (None, records[media_id].get("version")):
                unreported.append(media_id)
    return unreported


def _publish_event_output(context, media: MediaAsset, outputs: Sequence[ItemOutput],
                          results: dict[str, ItemResult]) -> None:
    pubsub = context.resources.pubsub
    if not pubsub.output_topic:
        raise dg.Failure(f"media asset '{media.name}' has event_output={media.event_output!r}, but the "
                         "pubsub resource has no output_topic (set KLIO_PUBSUB_OUTPUT_TOPIC)")
    messages = [(encode_event(MediaEvent(media_id), media.event_output),
                 {"asset": output.asset, "status": result.status, "run_id": context.run_id})
                for output in outputs for media_id, result in results.items()
                if result.status in (MATERIALIZED, SKIPPED)]
    if messages:
        pubsub.publish(pubsub.output_topic, messages)
    context.log.info(f"'{media.name}': published {len(messages)} event(s) to {pubsub.output_topic}")


def _materialization_metadata(asset: str, media_id: str, written: dict, result: ItemResult) -> dict:
    """What the UI shows for one written output; for a fresh output recovered from storage, what
    its record kept, and which run wrote it."""
    record = written.get("record")
    meta = dict(record.get("metadata", {}) if record else written["metadata"])
    out: dict = {"path": dg.MetadataValue.path(written["uri"])}
    if record:
        out.update(recovered_from_storage=True, written_by_run=str(record.get("run_id")),
                   output_version=str(record.get("version")))
    else:
        out.update(compute_ms=round(result.seconds * 1000, 1), output_version=written["version"])
    png = meta.pop("png_base64", None)
    if png is not None:
        out["plot"] = dg.MetadataValue.md(f"![{asset} {media_id}](data:image/png;base64,{png})")
    if "shape" in meta:
        meta["shape"] = str(tuple(meta["shape"]))
    if result.retries:
        out["retries"] = result.retries
    out.update(meta)
    return out

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
set of partitions runs its selected assets as ONE Beam pipeline over all of the run's IDs (on
the ``beam_runner`` resource, reading and writing through ``media_storage``): each ID passes
through the selected assets once, upstream before downstream, values handed on in memory
(``klio_assets.media_run``). Each written output becomes a materialization of exactly its
partition, reported while the run goes on, with small metadata (path, size, shape, duration,
sample rate, a link to the plot) and its checks' results; an output that exists from the same
code version, config and inputs is skipped unless forced; an ID whose input is missing
(dropped) or whose processing failed is reported with its reason and is not marked
materialized, while the other IDs carry on. The step fails at the end if any item failed, so
the UI shows exactly those partitions as failed.

Why one multi-asset: Dagster marks every partition of a multi-partition step materialized when
the step yields its output, and skips downstream steps when it does not. So the media assets of a
code location share one subsettable step that yields per-ID materialization events itself.
"""

import dataclasses
import graphlib
import inspect
import typing
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import dagster as dg

from klio_assets.checks import finite_values
from klio_assets.codecs import NDARRAY, WAVEFORM, codec_for
from klio_assets.media_types import SourceMedia
from klio_assets.media_run import run_media_assets
from klio_core.partitions import media_ids
from pipelines.items import ItemCheck, ItemInput, ItemOutput, ItemSpec, ItemTask

DEFAULT_MAX_IDS_PER_RUN = 500
"""How many media IDs one run (and so one Beam pipeline) takes at most in a backfill."""

RESERVED_CONFIG_KEYS = {"force"}


@dataclass(frozen=True)
class MediaAsset(ItemSpec):
    """A per-item function (its ``ItemSpec``) and what only Dagster needs of it."""

    config_cls: type[dg.Config] | None = None
    description: str | None = None
    group_name: str = "media"
    event_output: str | None = None

    def task(self, raw_config: Mapping | None, force: bool = False,
             outputs: Sequence[ItemOutput] | None = None, run_id: str | None = None) -> ItemTask:
        config = self.config_cls(**(raw_config or {})) if self.config_cls else None
        spec = {f.name: getattr(self, f.name) for f in dataclasses.fields(ItemSpec)}
        return ItemTask(**{**spec, "outputs": tuple(outputs or self.outputs)}, config=config, force=force,
                        run_id=run_id)

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
    setup: Mapping[str, Callable[[], object]] | None = None,
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
        setup: parameter name -> a function of no arguments that builds something expensive (a
            model, a table, a client). It runs once per worker process, the first time the
            function is actually called there, and its value is passed to every call
            (``pipelines.worker_resources``). With ``timeout_s`` the value travels to the
            timeout's child process with each call, so it must be picklable.
    """

    def declare(fn: Callable) -> MediaAsset:
        return _declare(fn, name or fn.__name__, dict(outs or {}), dict(ins or {}), checks,
                        description or inspect.getdoc(fn), code_version, group_name, timeout_s,
                        retries, retry_backoff_s, tuple(retry_on), event_output, dict(setup or {}))

    return declare(fn) if fn is not None else declare


def _declare(fn, asset_name, outs, ins, checks, description, code_version, group_name, timeout_s,
             retries, retry_backoff_s, retry_on, event_output, setup) -> MediaAsset:
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
            raise TypeError(f"{where}: annotate the return type (np.ndarray, Waveform, PlotImage, DataFrame or bytes)")
        if isinstance(checks, Mapping):
            raise TypeError(f"{where}: checks is a mapping only for functions with outs")
        codecs = {asset_name: codec_for(hints["return"], f"{where} return value")}
        by_output = {asset_name: checks}
    outputs = tuple(
        ItemOutput(out, codec, ((finite_values(),) if codec in (NDARRAY, WAVEFORM) else ()) + tuple(by_output.get(out, ())))
        for out, codec in codecs.items())

    config_cls = None
    inputs = []
    parameters = inspect.signature(fn).parameters
    unknown = set(setup) - set(parameters)
    if unknown:
        raise TypeError(f"{where}: setup names parameters the function does not have: {sorted(unknown)}")
    not_callable = [param for param, factory in setup.items() if not callable(factory)]
    if not_callable:
        raise TypeError(f"{where}: setup values must be functions of no arguments; not for {not_callable}")
    for param in parameters:
        annotation = hints.get(param)
        if param in setup:
            continue
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
    return MediaAsset(asset_name, fn, tuple(inputs), outputs, code_version=code_version, timeout_s=timeout_s,
                      retries=retries, retry_backoff_s=retry_backoff_s, retry_on=retry_on,
                      returns_dict=bool(outs), setup=tuple(setup.items()), config_cls=config_cls,
                      description=description, group_name=group_name, event_output=event_output)


def media_asset_graph(media_assets: Sequence[MediaAsset]) -> dict[str, tuple[str, ...]]:
    """Every media asset (each output of each ``@media_asset``) -> the media assets it reads.
    Its keys are "every media asset": what ``media_job`` and a top-down event run."""
    return {o.asset: tuple(a.upstream) for a in media_assets for o in a.outputs}


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
            yield from run_media_assets(context, ordered)

    return _materialize

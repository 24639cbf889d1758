"""``@media_asset``: turn a function of ONE media ID's data into a Dagster asset over all of them.

The author writes what happens to one item::

    @media_asset(code_version="1", retries=2, timeout_s=60)
    def loudness(waveform: Waveform, config: LoudnessConfig) -> np.ndarray:
        return librosa.feature.rms(y=waveform.samples, frame_length=config.frame_length)

and lists it with the others in ``build_media_assets([...])`` (``klio_assets/definitions.py``,
which ``klio_assets.framework.assets`` turns into Dagster definitions).
A function with several outputs declares them, ``outs={"foreground": np.ndarray, ...}``, and
returns a dict; each output is its own asset.

Parameters name the inputs: a parameter annotated ``SourceMedia`` receives the ID's source file
(Klio's data input); any other parameter receives the upstream media asset of the same name
(or the one named in ``ins``), decoded by its annotation; ``config`` (a pydantic model:
``pydantic.BaseModel``, or ``dagster.Config``, which is one) receives the asset's run config.
The return annotation picks the stored format
(``klio_core.codecs``).

The framework owns the rest. Every media asset is partitioned by ``media_ids``. A run over any
set of partitions runs its selected assets as ONE Beam pipeline over all of the run's IDs (on
the ``beam_runner`` resource, reading and writing through ``media_storage``): each ID passes
through the selected assets once, upstream before downstream, values handed on in memory
(``klio_assets.framework.media_run``). Each written output becomes a materialization of exactly its
partition, reported while the run goes on, with small metadata (path, size, shape, duration,
sample rate, a link to the plot) and its checks' results; an output that exists from the same
code version, config and inputs is skipped unless forced; an ID whose input is missing
(dropped) or whose processing failed is reported with its reason and is not marked
materialized, while the other IDs carry on. The step fails at the end if any item failed, so
the UI shows exactly those partitions as failed.

This module needs no Dagster: a ``MediaAsset`` is plain data that Beam workers unpickle. Its
``task`` turns the run config into the config object the function receives: the model itself,
or, for a ``dagster.Config``, a namespace of its fields (so that workers need not import
Dagster; write a ``pydantic.BaseModel`` to keep its methods and properties on workers).

Why one multi-asset: Dagster marks every partition of a multi-partition step materialized when
the step yields its output, and skips downstream steps when it does not. So the media assets of a
code location share one subsettable step that yields per-ID materialization events itself.
"""

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydantic

from klio_core.checks import ItemCheck, finite_values
from klio_core.codecs import NDARRAY, WAVEFORM, codec_for
from klio_core.media_types import SourceMedia
from pipelines.specs import ItemInput, ItemOutput, ItemSpec, ItemTask

DEFAULT_MAX_IDS_PER_RUN = 500
"""How many media IDs one run (and so one Beam pipeline) takes at most in a backfill."""

RESERVED_CONFIG_KEYS = {"force"}
EVENT_OUTPUT_FORMATS = (None, "klio", "json")


@dataclass(frozen=True)
class MediaAsset(ItemSpec):
    """A per-item function (its ``ItemSpec``) and what only Dagster needs of it."""

    config_cls: type[pydantic.BaseModel] | None = None
    description: str | None = None
    group_name: str = "media"
    event_output: str | None = None

    def task(self, raw_config: Mapping | None, force: bool = False,
             outputs: Sequence[ItemOutput] | None = None, run_id: str | None = None) -> ItemTask:
        """This function in one run: its config built from ``raw_config`` (validated by its model),
        as plain data."""
        config = self.config_cls(**(raw_config or {})) if self.config_cls else None
        spec = {f.name: getattr(self, f.name) for f in dataclasses.fields(ItemSpec)}
        return ItemTask(**{**spec, "outputs": tuple(outputs or self.outputs)}, config=plain_config(config),
                        config_json=config.model_dump(mode="json") if config is not None else None,
                        force=force, run_id=run_id)


def plain_config(config: pydantic.BaseModel | None) -> Any:
    """What the function receives as ``config``: the model itself, unless it is a
    ``dagster.Config``, whose fields become a namespace (nested models too)."""
    if config is None or not any(c.__module__.split(".")[0] == "dagster" for c in type(config).__mro__):
        return config
    return _namespace(config.model_dump())


def _namespace(value: Any) -> Any:
    if isinstance(value, dict):
        return types.SimpleNamespace(**{k: _namespace(v) for k, v in value.items()})
    return value


@dataclass(frozen=True)
class MediaAssetOptions:
    """The decorator's options (see ``media_asset``), as given."""

    name: str | None = None
    outs: Mapping[str, type] = field(default_factory=dict)
    ins: Mapping[str, str] = field(default_factory=dict)
    checks: Sequence[ItemCheck] | Mapping[str, Sequence[ItemCheck]] = ()
    description: str | None = None
    code_version: str | None = None
    group_name: str = "media"
    timeout_s: float | None = None
    retries: int = 0
    retry_backoff_s: float = 1.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    event_output: str | None = None
    setup: Mapping[str, Callable[[], object]] = field(default_factory=dict)


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
) -> Any:
    """Decorator: declare a media asset from a per-item function (see the module docstring).

    Args:
        name: the asset's name (or, with ``outs``, the name of its config section); default: the
            function's name.
        outs: output asset name -> value type, for a function that returns a dict of several.
        ins: parameter name -> upstream asset name, where they differ.
        checks: extra per-item checks (``klio_core.checks``); with ``outs``, a mapping of
            output name -> checks. ``finite_values`` is added to every array or waveform output.
        description: shown in the UI; default: the function's docstring.
        code_version: bump it when the function's behaviour changes; outputs made by another code
            version (or config) are recomputed, fresh ones are skipped.
        group_name: the UI group.
        timeout_s: fail an attempt that takes longer than this (Klio's ``@timeout``).
        retries: attempts after the first that fail with one of ``retry_on`` or time out
            (Klio's ``@retry``); waits ``retry_backoff_s * 2 ** (n - 1)`` before retry n.
        event_output: ``"klio"`` or ``"json"``: publish one message per ID to the ``pubsub``
            resource's ``output_topic`` (Klio's event output), with its ``status``:
            ``materialized``, ``skipped`` (fresh), or ``failed`` / ``dropped`` and the ``reason``.
        setup: parameter name -> a function of no arguments that builds something expensive (a
            model, a table, a client). It runs once per worker process, the first time the
            function is actually called there, and its value is passed to every call
            (``pipelines.worker_resources``). With ``timeout_s`` the value travels to the
            timeout's child process with each call, so it must be picklable.
    """

    options = MediaAssetOptions(name, dict(outs or {}), dict(ins or {}), checks, description, code_version,
                                group_name, timeout_s, retries, retry_backoff_s, tuple(retry_on), event_output,
                                dict(setup or {}))
    return _declare(fn, options) if fn is not None else (lambda f: _declare(f, options))


def _declare(fn: Callable, options: MediaAssetOptions) -> MediaAsset:
    asset_name = options.name or fn.__name__
    outs, ins, checks, setup = options.outs, options.ins, options.checks, options.setup
    where = f"media asset '{asset_name}' ({fn.__module__}.{fn.__qualname__})"
    hints = typing.get_type_hints(fn)
    if options.event_output not in EVENT_OUTPUT_FORMATS:
        raise ValueError(f"{where}: event_output must be 'klio', 'json' or None, not {options.event_output!r}")
    if options.retries < 0 or (options.timeout_s is not None and options.timeout_s <= 0):
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
            if not (inspect.isclass(annotation) and issubclass(annotation, pydantic.BaseModel)):
                raise TypeError(f"{where}: parameter 'config' must be annotated with a pydantic model "
                                "(a pydantic.BaseModel or dagster.Config subclass)")
            config_cls = annotation
        elif annotation is SourceMedia:
            inputs.append(ItemInput(param, None))
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
    return MediaAsset(asset_name, fn, tuple(inputs), outputs, code_version=options.code_version,
                      timeout_s=options.timeout_s, retries=options.retries, retry_backoff_s=options.retry_backoff_s,
                      retry_on=options.retry_on, returns_dict=bool(outs), setup=tuple(setup.items()),
                      config_cls=config_cls, description=options.description or inspect.getdoc(fn),
                      group_name=options.group_name, event_output=options.event_output)

"""The media assets of a code location as Dagster definitions: one subsettable multi-asset whose
step runs ONE Beam pipeline per run (``klio_assets.framework.media_run``), with an asset spec per
output and an asset check spec per per-item check, partitioned by ``media_ids``."""

import difflib
import warnings
from collections.abc import Collection, Sequence

import dagster as dg

from klio_assets.framework.config import config_field
from klio_assets.framework.media_asset import DEFAULT_MAX_IDS_PER_RUN, RESERVED_CONFIG_KEYS, MediaAsset
from klio_assets.framework.media_run import run_media_assets
from klio_assets.framework.partitions import media_ids
from klio_core.media_ids import storage_name
from pipelines.graph import in_dependency_order

STORED_AS_EXAMPLE_ID = "Track-1"
"""The media ID that an asset's ``stored_as`` metadata shows as an example of the escaped name."""


def asset_specs(media: MediaAsset) -> list[dg.AssetSpec]:
    """One asset spec per output of ``media``."""
    return [dg.AssetSpec(
        key=o.asset,
        deps=media.upstream,
        description=media.description,
        code_version=media.code_version,
        group_name=media.group_name,
        partitions_def=media_ids,
        skippable=True,
        kinds={"beam", "python"},
        metadata={
            "per_item_function": f"{media.fn.__module__}.{media.fn.__qualname__}",
            "stored_as": f"<root>/{o.asset}/<storage name of the media ID>{o.codec.suffix} (media ID "
                         f"'{STORED_AS_EXAMPLE_ID}': {storage_name(STORED_AS_EXAMPLE_ID)}{o.codec.suffix})",
            **({"event_output": media.event_output} if media.event_output else {}),
            **({"timeout_s": media.timeout_s} if media.timeout_s else {}),
            **({"retries": media.retries} if media.retries else {}),
        },
    ) for o in media.outputs]


def check_specs(media: MediaAsset) -> list[dg.AssetCheckSpec]:
    """One asset check spec per per-item check of each output of ``media``."""
    return [dg.AssetCheckSpec(c.name, asset=o.asset, partitions_def=media_ids, description=c.description)
            for o in media.outputs for c in o.checks]


def build_media_assets(
    media_assets: Sequence[MediaAsset],
    *,
    name: str = "media_assets",
    max_ids_per_run: int = DEFAULT_MAX_IDS_PER_RUN,
    from_other_locations: Collection[str] = (),
) -> dg.AssetsDefinition:
    """All of a code location's media assets as one subsettable Dagster multi-asset.

    Args:
        media_assets: every ``@media_asset`` of the code location.
        name: the step's name in runs.
        max_ids_per_run: a backfill puts at most this many IDs in one run.
        from_other_locations: the upstream media assets that another code location makes, by
            name. Any other upstream parameter must name one of ``media_assets``: a typo fails
            here, at load, naming the function, the parameter and the closest asset names.

    Run config: ``force`` (recompute fresh outputs too) and one optional section per asset, e.g.
    ``{"ops": {"media_assets": {"config": {"force": true, "waveform": {"sample_rate": 16000}}}}}``.
    """
    ordered = in_dependency_order(media_assets, reserved=RESERVED_CONFIG_KEYS)
    _check_upstream_names(ordered, from_other_locations)
    config_schema = {
        "force": dg.Field(bool, default_value=False, is_required=False,
                          description="Recompute outputs even when they exist from the same code version and config."),
        **{a.name: config_field(a.config_cls, f"media asset '{a.name}'") for a in ordered if a.config_cls is not None},
    }
    resource_keys = {"media_storage", "beam_runner"} | ({"pubsub"} if any(a.event_output for a in ordered) else set())

    with warnings.catch_warnings():  # backfill_policy and partitioned checks are marked beta/preview
        warnings.simplefilter("ignore", dg.BetaWarning)
        warnings.simplefilter("ignore", dg.PreviewWarning)

        @dg.multi_asset(
            name=name,
            specs=[spec for a in ordered for spec in asset_specs(a)],
            check_specs=[spec for a in ordered for spec in check_specs(a)],
            can_subset=True,
            partitions_def=media_ids,
            config_schema=config_schema,
            required_resource_keys=resource_keys,
            backfill_policy=dg.BackfillPolicy.multi_run(max_ids_per_run),
        )
        def _materialize(context: dg.AssetExecutionContext):
            yield from run_media_assets(context, ordered)

    return _materialize


def _check_upstream_names(ordered: Sequence[MediaAsset], from_other_locations: Collection[str]) -> None:
    made = {o.asset for a in ordered for o in a.outputs}
    known = made | set(from_other_locations)
    for media in ordered:
        for spec in media.inputs:
            param, upstream = spec.param, spec.asset
            if upstream is not None and upstream not in known:
                close = difflib.get_close_matches(upstream, sorted(known), n=3)
                hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else \
                    f"the media assets here: {', '.join(sorted(made))}"
                raise TypeError(
                    f"media asset '{media.name}': parameter '{param}' names no media asset ({hint}); an upstream "
                    "that another code location makes goes in build_media_assets(..., from_other_locations=[...])")

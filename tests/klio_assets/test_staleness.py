"""Dagster's staleness (the UI's Unsynced badge) agrees with the project's freshness rule: a media
ID's partition of an asset is unsynced in Dagster exactly when the next run recomputes it.

Dagster's answer is asked as the UI asks it, over GraphQL (each code location of
``staleness_defs.py`` in a code server of its own), about the runs made here in process."""

import os

import dagster as dg
import pytest
from dagster_graphql.test.utils import define_out_of_process_workspace, execute_dagster_graphql

from klio_assets import build_media_assets
from tests.conftest import materialize_ids, run_summary
from tests.klio_assets.staleness_defs import AS_BUILT_IN, CHAIN, MFCC_BUMPED

pytestmark = pytest.mark.slow  # two code servers

DEFS = os.path.join(os.path.dirname(__file__), "staleness_defs.py")
NEW_MFCC_CONFIG = {"ops": {"media_assets": {"config": {"mfcc": {"n_mfcc": 13}}}}}
STALE_STATUS = """query($key: AssetKeyInput!, $partition: String!) { assetNodeOrError(assetKey: $key) {
  ... on AssetNode { staleStatus(partition: $partition) } } }"""


def unsynced(workspace, media_id: str) -> set[str]:
    context = workspace.create_request_context()  # a request of its own, as each page load is
    statuses = {a: execute_dagster_graphql(context, STALE_STATUS, {"key": {"path": [a]}, "partition": media_id})
                for a in CHAIN}
    for asset, result in statuses.items():
        assert not result.errors, (asset, result.errors)
    return {a for a, result in statuses.items() if result.data["assetNodeOrError"]["staleStatus"] == "STALE"}


def recomputed(instance, result: dg.ExecuteInProcessResult) -> set[str]:
    assert result.success
    return {a for a in CHAIN if run_summary(instance, a, result.run_id)["materialized"]}


def test_unsynced_in_dagster_exactly_when_the_next_run_recomputes(instance, resources, catalogue_ids):
    with define_out_of_process_workspace(DEFS, "defs", instance) as as_built_in, \
            define_out_of_process_workspace(DEFS, "bumped", instance) as bumped:
        check_agreement(instance, resources, catalogue_ids[0], as_built_in, bumped)


def check_agreement(instance, resources, media_id: str, as_built_in, bumped) -> None:
    assets = build_media_assets(AS_BUILT_IN)
    run = lambda assets=assets, **kw: materialize_ids([assets], [media_id], instance, resources,  # noqa: E731
                                                      selection=CHAIN, **kw)
    assert recomputed(instance, run()) == set(CHAIN)
    assert unsynced(as_built_in, media_id) == set()
    assert recomputed(instance, run()) == set()  # fresh: skipped, and Dagster agrees
    assert unsynced(as_built_in, media_id) == set()

    # An upstream recomputed: its downstream only.
    forced = materialize_ids([assets], [media_id], instance, resources, selection=["mel_spectrogram"],
                             tags={"klio/force": "true"})
    assert forced.success
    assert unsynced(as_built_in, media_id) == {"mfcc"}
    assert recomputed(instance, run()) == {"mfcc"}
    assert unsynced(as_built_in, media_id) == set()

    # Another config than the definition's: its outputs are not what a default run makes.
    assert recomputed(instance, run(run_config=NEW_MFCC_CONFIG)) == {"mfcc"}
    assert unsynced(as_built_in, media_id) == {"mfcc"}
    assert recomputed(instance, run()) == {"mfcc"}
    assert unsynced(as_built_in, media_id) == set()

    # A new code version.
    assert unsynced(bumped, media_id) == {"mfcc"}
    assert recomputed(instance, run(build_media_assets(MFCC_BUMPED))) == {"mfcc"}
    assert unsynced(bumped, media_id) == set()

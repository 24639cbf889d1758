import itertools
import os
import shutil
import signal

import dagster as dg
import pytest

from klio_core.media_ids import PARTITIONS_NAME
from klio_dev.demo import write_catalogue
from klio_dev.pubsub_emulator import PubSubEmulator, free_port
from resources.beam import BeamRunner
from resources.dagster_tags import RANGE_END_TAG, RANGE_START_TAG
from resources.pubsub import PubSubResource
from resources.storage import LocalMediaStorage

# A suite started as a background job (`scripts/test.sh &`, nohup, some CI runners) inherits
# SIGINT ignored, and an in-process Dagster run maps SIGTERM to SIGINT's handling: every server
# and helper process the tests start would then ignore both, and outlive its stop. Restored here,
# for this process and, through exec, its children.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

CLIP_SECONDS = 1.5
GCS_BUCKET = "klio-media"
_names = itertools.count()


@pytest.fixture(scope="session")
def catalogue_sources(tmp_path_factory) -> tuple[str, list[str]]:
    """Four short clips, one per kind and format (wav, flac, ogg, mp3), written once per session."""
    source_dir = str(tmp_path_factory.mktemp("catalogue") / "sources")
    return source_dir, write_catalogue(source_dir, count=4, seconds=CLIP_SECONDS)


@pytest.fixture
def store_root(tmp_path, catalogue_sources) -> str:
    """A fresh storage root whose ``sources`` folder holds a copy of the session catalogue."""
    root = str(tmp_path / "store")
    shutil.copytree(catalogue_sources[0], os.path.join(root, "sources"))
    return root


@pytest.fixture
def catalogue_ids(catalogue_sources) -> list[str]:
    return list(catalogue_sources[1])


@pytest.fixture
def resources(store_root) -> dict:
    return {"media_storage": LocalMediaStorage(root=store_root), "beam_runner": BeamRunner()}


@pytest.fixture(scope="session")
def emulator():
    """The real Pub/Sub emulator, one per test session (tests that use it are marked slow)."""
    with PubSubEmulator(project="klio-test") as emulator:
        yield emulator


@pytest.fixture(scope="session")
def gcs_emulator():
    """A GCS API emulator (in memory) with the bucket ``GCS_BUCKET``; its URL is what
    ``STORAGE_EMULATOR_HOST`` takes."""
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=GCS_BUCKET)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def pubsub(emulator, monkeypatch) -> PubSubResource:
    """Fresh topics and a subscription (10 s ack deadline) on the real emulator, per test."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
    n = next(_names)
    resource = PubSubResource(project="klio-test", topic=f"events-{n}", subscription=f"events-{n}-sub",
                              dead_letter_topic=f"dead-{n}", ack_deadline_seconds=10)
    resource.ensure_exists()
    resource.subscriber.create_subscription(request={
        "name": resource.subscriber.subscription_path("klio-test", f"dead-{n}-sub"),
        "topic": resource.topic_path(f"dead-{n}")})
    return resource


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def materialize_ids(assets, ids, instance, resources, tags=None, **kwargs) -> dg.ExecuteInProcessResult:
    """Materialize ``ids`` in ONE run, as a backfill run does: register them in this order (so they
    form one contiguous range of ``media_ids``) and run the range."""
    new = [i for i in ids if not instance.has_dynamic_partition(PARTITIONS_NAME, i)]
    instance.add_dynamic_partitions(PARTITIONS_NAME, new)
    tags = {**(tags or {}), RANGE_START_TAG: ids[0],
            RANGE_END_TAG: ids[-1]}
    return dg.materialize(assets, instance=instance, resources=resources, tags=tags, **kwargs)


def materialized_partitions(instance, asset: str) -> set[str]:
    return set(instance.get_materialized_partitions(dg.AssetKey(asset)))


def latest_metadata(instance, asset: str, media_id: str) -> dict:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[media_id]), limit=1
    ).records
    assert records, f"no materialization of {asset} [{media_id}]"
    return records[0].asset_materialization.metadata


def observations(instance, asset: str) -> dict[str, dict]:
    """The latest observation metadata per media ID of ``asset`` (skips and failures are reported so)."""
    records = instance.fetch_observations(dg.AssetKey(asset), limit=1000).records
    out = {}
    for r in sorted(records, key=lambda r: r.storage_id):
        if r.partition_key is not None:
            out[r.partition_key] = {k: v.value for k, v in r.asset_observation.metadata.items()}
    return out


def pinged(instance, asset: str) -> set[str]:
    """The media IDs of ``asset``'s ping observations (of no partition)."""
    records = instance.fetch_observations(dg.AssetKey(asset), limit=1000).records
    return {m for r in records if r.partition_key is None
            and r.asset_observation.metadata.get("status", dg.MetadataValue.text("")).value == "ping"
            for m in r.asset_observation.metadata["media_ids"].value}


def run_summary(instance, asset: str, run_id: str) -> dict:
    """The per-run observation of ``asset``: counters and per-item timing percentiles."""
    records = instance.fetch_observations(dg.AssetKey(asset), limit=1000).records
    [summary] = [r for r in records if r.partition_key is None and r.run_id == run_id]
    return {k: v.value for k, v in summary.asset_observation.metadata.items()}

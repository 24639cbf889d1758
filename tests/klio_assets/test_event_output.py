"""Event output: a media asset tells downstream jobs, on Pub/Sub, which IDs are ready."""

import json
import os
import uuid

import numpy as np
import pytest

from klio_assets import Waveform, build_media_assets, media_asset
from klio_assets.builtin.audio import waveform
from klio_core.wire import MediaEvent, parse_event
from resources.beam import BeamRunner
from resources.pubsub import PubSubResource
from resources.storage import LocalMediaStorage
from tests.conftest import materialize_ids

pytestmark = pytest.mark.slow  # starts the Pub/Sub emulator


@media_asset(event_output="klio")
def peak(waveform: Waveform) -> np.ndarray:
    return np.abs(waveform.samples).max(keepdims=True)


@media_asset(event_output="json")
def rms(waveform: Waveform) -> np.ndarray:
    return np.sqrt(np.mean(waveform.samples ** 2, keepdims=True))


def pull_all(pubsub: PubSubResource, subscription: str) -> list:
    path = pubsub.subscriber.subscription_path(pubsub.project, subscription)
    received = pubsub.subscriber.pull(request={"subscription": path, "max_messages": 100,
                                               "return_immediately": True}, timeout=10).received_messages
    if received:
        pubsub.subscriber.acknowledge(request={"subscription": path, "ack_ids": [m.ack_id for m in received]})
    return list(received)


@pytest.fixture
def pubsub(emulator, monkeypatch) -> PubSubResource:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
    out = f"eo-out-{uuid.uuid4().hex[:8]}"  # one output topic per test: the emulator lives for the session
    resource = PubSubResource(project="klio-test", topic="eo-in", subscription="eo-in-sub", output_topic=out)
    resource.ensure_exists()
    resource.subscriber.create_subscription(request={
        "name": resource.subscriber.subscription_path("klio-test", f"{out}-sub"), "topic": resource.topic_path(out)})
    return resource


def test_one_message_per_ready_id_in_klio_and_json_formats(pubsub, instance, store_root, catalogue_ids):
    resources = {"media_storage": LocalMediaStorage(root=store_root), "beam_runner": BeamRunner(), "pubsub": pubsub}
    assets = build_media_assets([waveform, peak, rms])
    ids = [catalogue_ids[0], "not-there", catalogue_ids[1]]
    result = materialize_ids([assets], ids, instance, resources)
    assert result.success  # "not-there" has no source: it is dropped, which does not fail a run

    messages = pull_all(pubsub, f"{pubsub.output_topic}-sub")
    klio = sorted((parse_event(m.message.data, set()).media_id, m.message.attributes["status"])
                  for m in messages if m.message.attributes["asset"] == "peak")
    assert klio == sorted([(catalogue_ids[0], "materialized"), (catalogue_ids[1], "materialized"),
                           ("not-there", "dropped")])  # what was not made is announced, with its reason
    [dropped] = [m for m in messages if m.message.attributes["asset"] == "peak"
                 and m.message.attributes["status"] == "dropped"]
    assert "source media not found" in dropped.message.attributes["reason"]
    as_json = sorted(json.loads(m.message.data)["element"] for m in messages if m.message.attributes["asset"] == "rms")
    assert as_json == sorted([*catalogue_ids[:2], "not-there"])
    assert all(m.message.attributes["run_id"] == result.run_id for m in messages)
    assert len(messages) == 6
    first_peak = next(m for m in messages if m.message.attributes["asset"] == "peak")
    assert parse_event(first_peak.message.data, set()) == MediaEvent(parse_event(first_peak.message.data, set()).media_id)

    # Fresh outputs are passed through, as Klio does: downstream jobs still hear about them.
    again = materialize_ids([assets], catalogue_ids[:2], instance, resources)
    assert again.success
    statuses = {(m.message.attributes["asset"], m.message.attributes["status"])
                for m in pull_all(pubsub, f"{pubsub.output_topic}-sub")}
    # (the run's range still holds "not-there", between the two)
    assert statuses == {("peak", "skipped"), ("rms", "skipped"), ("peak", "dropped"), ("rms", "dropped")}


def test_a_ping_is_passed_on_as_a_ping_and_nothing_is_processed(pubsub, instance, store_root, catalogue_ids):
    resources = {"media_storage": LocalMediaStorage(root=store_root), "beam_runner": BeamRunner(), "pubsub": pubsub}
    ids = catalogue_ids[:2]
    result = materialize_ids([build_media_assets([waveform, peak, rms])], ids, instance, resources,
                             tags={"klio/ping": "true"})
    assert result.success
    messages = pull_all(pubsub, f"{pubsub.output_topic}-sub")
    klio = sorted(((parse_event(m.message.data, set()), m.message.attributes["status"])
                   for m in messages if m.message.attributes["asset"] == "peak"), key=lambda e: e[0].media_id)
    assert klio == [(MediaEvent(media_id, ping=True), "ping") for media_id in sorted(ids)]
    assert sorted(json.loads(m.message.data)["ping"] for m in messages if m.message.attributes["asset"] == "rms") == [
        True, True]
    assert not any(os.path.exists(os.path.join(store_root, asset)) for asset in ("waveform", "peak", "rms"))


def test_event_output_without_an_output_topic_names_the_setting(emulator, monkeypatch, instance, store_root, catalogue_ids):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
    resources = {"media_storage": LocalMediaStorage(root=store_root), "beam_runner": BeamRunner(),
                 "pubsub": PubSubResource(project="klio-test")}
    result = materialize_ids([build_media_assets([waveform, peak])], catalogue_ids[:1], instance, resources,
                             raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("media_assets").user_failure_data
    assert "KLIO_PUBSUB_OUTPUT_TOPIC" in failure.description
    assert "peak" in failure.description
    assert "pubsub" in build_media_assets([waveform, peak]).required_resource_keys
    assert "pubsub" not in build_media_assets([waveform]).required_resource_keys

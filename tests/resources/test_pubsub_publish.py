"""``PubSubResource.publish`` sends its messages in as few requests as Pub/Sub takes, in order,
each with its attributes, and returns their IDs once they are published (the real emulator)."""

import pytest

from resources import pubsub as pubsub_module

pytestmark = pytest.mark.slow


def test_messages_arrive_once_each_with_their_attributes_over_several_requests(pubsub, monkeypatch):
    requests = []
    cut = pubsub_module.publish_requests

    def counted(messages):
        for request in cut(messages):
            requests.append(len(request))
            yield request

    monkeypatch.setattr(pubsub_module, "publish_requests", counted)
    messages = [(f"id-{i:04d}".encode(), {"n": str(i), **({"reason": "x" * 100} if i % 7 == 0 else {})})
                for i in range(2_500)]
    ids = pubsub.publish(pubsub.topic, messages)
    assert requests == [1000, 1000, 500]
    assert len(ids) == len(set(ids)) == 2_500
    received = pubsub.pull(3_000)
    assert sorted((m.message.data, dict(m.message.attributes), m.message.message_id) for m in received) == sorted(
        (data, attributes, message_id) for (data, attributes), message_id in zip(messages, ids, strict=True))


def test_a_request_is_cut_before_it_passes_pubsubs_size_limit():
    big = (b"x" * 4_000_000, {})
    assert [len(r) for r in pubsub_module.publish_requests([big, big, big, (b"y", {"a": "b"})])] == [2, 2]

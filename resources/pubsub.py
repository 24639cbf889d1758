"""The Pub/Sub resource: the input subscription, and the output and dead-letter topics.

Works against real Pub/Sub (credentials from the environment, as for any Google client) and
against the emulator: when ``PUBSUB_EMULATOR_HOST`` is set, google-cloud-pubsub talks to it.
"""

import time
from collections.abc import Mapping, Sequence

import dagster as dg
from google import pubsub_v1 as pubsub_gapic
from google.api_core.exceptions import AlreadyExists
from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # a namespace package mypy does not follow
from pydantic import Field, PrivateAttr

PULL_BATCH = 1000  # the most messages one pull returns
WAIT_POLL_S = 0.1
ORIGIN_KEY_ATTRIBUTE = "klio_origin_key"
"""Set on a message carried over from a stopped emulator: the key it had there (see ``klio-dev``)."""


ASSET_ATTRIBUTE = "asset"
"""The attribute of an event output message naming the output it announces (and so, to a code
location downstream, which of its assets to run)."""
STATUS_ATTRIBUTE = "status"
"""Its state: ``materialized``, ``skipped`` (fresh), ``ping``; or ``failed`` / ``dropped``, with
the reason in ``REASON_ATTRIBUTE``, so that a location waiting for it can record why."""
REASON_ATTRIBUTE = "reason"
NOT_MADE = ("failed", "dropped")


def dead_letter(message, reason: str, subscription: str) -> tuple[bytes, dict[str, str]]:
    """What the dead-letter topic gets for a bad ``message`` (a received ``PubsubMessage``) pulled
    from ``subscription``: its data as it came, its attributes, and why, where and which message."""
    return message.data, {**message.attributes, "error": reason[:1024], "source_message_id": message.message_id,
                          "source_message_key": message_key(message), "source_subscription": subscription}


def message_key(message) -> str:
    """What identifies a Pub/Sub message across restarts: ``<message ID>@<publish time in µs>``.

    Message IDs alone repeat: a fresh emulator, or a recreated topic, numbers its messages from 1
    again; the publish time tells them apart. A message carried over from a stopped emulator
    keeps the key it had there (attribute ``klio_origin_key``).
    """
    origin = message.attributes.get(ORIGIN_KEY_ATTRIBUTE)
    if origin:
        return origin
    published = message.publish_time
    micros = int(published.timestamp()) * 1_000_000 + published.microsecond
    return f"{message.message_id}@{micros}"


class PubSubResource(dg.ConfigurableResource):
    """Pulls new-content events and publishes event output and dead letters."""

    project: str = Field(description="Google Cloud project of the topics and subscription.")
    topic: str = Field(default="klio-media-events",
                       description="Input topic: where new-content events are published.")
    subscription: str = Field(default="klio-media-events-dagster",
                              description="Input subscription on `topic` that the sensor pulls.")
    output_topic: str | None = Field(
        default=None, description="Topic for event output (one message per materialized ID); none if unset.")
    dead_letter_topic: str | None = Field(
        default=None, description="Topic for bad events, with the reason in attribute 'error'; none if unset.")
    retry_topic: str | None = Field(default=None, description=(
        "With the stream on: the topic of the media IDs it failed or dropped, as bottom-up events, which "
        "the sensor runs as batch runs from `retry_subscription`; none if unset."))
    retry_subscription: str = Field(default="klio-media-events-retry-dagster",
                                    description="The sensor's subscription on `retry_topic`.")
    upstream_topic: str | None = Field(default=None, description=(
        "Where this code location asks the location upstream of it for an output it lacks (a bottom-up "
        "event, as Klio's KlioTriggerUpstream): that location's input topic; none if unset."))
    ack_deadline_seconds: int = Field(
        default=60, ge=10, le=600,
        description="Ack deadline of the subscription when `ensure_exists` creates it.")

    _publisher: pubsub_v1.PublisherClient | None = PrivateAttr(default=None)
    _subscriber: pubsub_v1.SubscriberClient | None = PrivateAttr(default=None)

    @property
    def publisher(self) -> pubsub_v1.PublisherClient:
        if self._publisher is None:
            self._publisher = pubsub_v1.PublisherClient()
        return self._publisher

    @property
    def subscriber(self) -> pubsub_v1.SubscriberClient:
        if self._subscriber is None:
            self._subscriber = pubsub_v1.SubscriberClient()
        return self._subscriber

    def topic_path(self, topic: str) -> str:
        return self.publisher.topic_path(self.project, topic)

    @property
    def subscription_path(self) -> str:
        return self.subscriber.subscription_path(self.project, self.subscription)

    @property
    def sensor_subscription_path(self) -> str:
        """What the Pub/Sub sensor pulls: the input subscription, or, with the stream on (a
        ``retry_topic``), the stream's retries."""
        return (self.subscriber.subscription_path(self.project, self.retry_subscription) if self.retry_topic
                else self.subscription_path)

    def ensure_exists(self) -> None:
        """Create the topics and the subscription if they are missing (for the emulator and dev)."""
        for topic in filter(None, (self.topic, self.output_topic, self.dead_letter_topic, self.retry_topic)):
            try:
                self.publisher.create_topic(request={"name": self.topic_path(topic)})
            except AlreadyExists:
                pass
        subscriptions = [(self.subscription_path, self.topic)]
        if self.retry_topic:
            subscriptions.append((self.sensor_subscription_path, self.retry_topic))
        for path, topic in subscriptions:
            try:
                self.subscriber.create_subscription(request={
                    "name": path, "topic": self.topic_path(topic), "ack_deadline_seconds": self.ack_deadline_seconds})
            except AlreadyExists:
                pass

    def pull(self, max_messages: int, timeout_s: float = 10.0, wait_s: float = 0.0,
             subscription_path: str | None = None) -> list:
        """Up to ``max_messages`` received messages; returns early when the subscription is drained.
        With ``wait_s``, an empty subscription is polled (every ``WAIT_POLL_S``) until a message
        arrives or ``wait_s`` has passed, so that a message published meanwhile is taken at once."""
        received: list = []
        deadline = time.monotonic() + wait_s
        while len(received) < max_messages:
            response = self.subscriber.pull(
                request={"subscription": subscription_path or self.subscription_path,
                         "max_messages": min(PULL_BATCH, max_messages - len(received)),
                         "return_immediately": True},
                timeout=timeout_s)
            if not response.received_messages:
                if received or time.monotonic() >= deadline:
                    break
                time.sleep(WAIT_POLL_S)
                continue
            received.extend(response.received_messages)
        return received

    def drain(self, wait_s: float = 0.0) -> list[tuple[bytes, dict[str, str]]]:
        """Every message on the subscription, not acknowledged, as ``(data, attributes)`` with its
        ``message_key`` in attribute ``klio_origin_key``: what ``klio-dev`` carries over from an
        emulator it stops to the next one it starts. Messages that a subscriber pulled but did not
        acknowledge come back only when their ack deadline passes: ``wait_s`` keeps pulling that
        long to take them too."""
        drained, seen = [], set()
        deadline = time.monotonic() + wait_s
        while True:
            fresh = 0
            for m in self.pull(PULL_BATCH):  # what is pulled here comes back too, after its deadline
                key = message_key(m.message)
                if key not in seen:
                    seen.add(key)
                    fresh += 1
                    drained.append((m.message.data, {**m.message.attributes, ORIGIN_KEY_ATTRIBUTE: key}))
            if not fresh:
                if time.monotonic() >= deadline:
                    return drained
                time.sleep(0.5)

    def acknowledge(self, ack_ids: Sequence[str], subscription_path: str | None = None) -> None:
        for start in range(0, len(ack_ids), PULL_BATCH):
            self.subscriber.acknowledge(request={"subscription": subscription_path or self.subscription_path,
                                                 "ack_ids": list(ack_ids[start:start + PULL_BATCH])})

    def publish(self, topic: str, messages: Sequence[tuple[bytes, Mapping[str, str]]]) -> list[str]:
        """Publish ``(data, attributes)`` pairs to ``topic``, in as few requests as Pub/Sub takes
        (``publish_requests``); return the message IDs once all are published.

        Each request is the generated client's ``publish``, with its retries, made in this thread:
        the client's own ``publish`` batches in a new thread per batch and sends it after 10 ms,
        which the media stream, publishing a few messages per report, paid in CPU and latency."""
        path = self.topic_path(topic)
        ids: list[str] = []
        for request in publish_requests(messages):
            response = pubsub_gapic.PublisherClient.publish(  # the generated method, which the client overrides
                self.publisher, topic=path, messages=[pubsub_gapic.PubsubMessage(data=data, attributes=dict(attributes))
                                                      for data, attributes in request])
            ids += response.message_ids
        return ids


# Pub/Sub takes 1,000 messages and 10 MB per publish request; the bytes counted here leave room for its framing.
MAX_REQUEST_MESSAGES, MAX_REQUEST_BYTES = 1000, 9_000_000


def publish_requests(messages: Sequence[tuple[bytes, Mapping[str, str]]]):
    """``messages`` in order, cut into publish requests within Pub/Sub's limits."""
    request: list[tuple[bytes, Mapping[str, str]]] = []
    size = 0
    for data, attributes in messages:
        bytes_ = len(data) + sum(len(k) + len(v) for k, v in attributes.items())
        if request and (len(request) == MAX_REQUEST_MESSAGES or size + bytes_ > MAX_REQUEST_BYTES):
            yield request
            request, size = [], 0
        request.append((data, attributes))
        size += bytes_
    if request:
        yield request

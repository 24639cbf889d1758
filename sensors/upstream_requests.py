"""Bottom-up across code locations on the sensor's path (Klio's ``KlioTriggerUpstream``).

A bottom-up event whose recipients read an output of another code location that does not exist
yet is not run: the sensor asks that location for exactly the missing outputs (a bottom-up
event on its input topic), keeps the event in its cursor, and acknowledges it. No run and no
worker waits. When the other location announces the outputs on its event output, the kept
event becomes an ordinary run; if it announces one of them as failed or dropped, the kept
event becomes a run that drops its media ID with that location's reason (``UPSTREAM_NOT_MADE_TAG``),
computing nothing, so Dagster marks the partition Failed by its own rule.

The streaming job asks the same way from its own process (``klio_assets.framework.stream``);
with the stream on, this sensor takes only the stream's retries and asks nothing.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from klio_core.media_store import MediaStore
from klio_core.wire import MediaEvent, encode_event
from pipelines.graph import selected_assets
from resources.pubsub import NOT_MADE, PubSubResource

REQUESTED_BY_ATTRIBUTE = "requested_by"


@dataclass(frozen=True)
class Held:
    """A bottom-up event kept until the outputs it waits for are announced."""

    recipients: tuple[str, ...]
    force: bool
    missing: tuple[str, ...]

    def to_json(self) -> list:
        return [list(self.recipients), self.force, list(self.missing)]

    @classmethod
    def from_json(cls, body: list) -> "Held":
        recipients, force, missing = body
        return cls(tuple(recipients), bool(force), tuple(missing))


@dataclass(frozen=True)
class Answer:
    """What an announcement did to a held event: ``ready`` (its inputs are all there: run it),
    ``not_made`` (the reason it is dropped), or neither (it still waits)."""

    event: MediaEvent
    ready: bool = False
    not_made: str = ""


def missing_inputs(event: MediaEvent, upstream: Mapping[str, Sequence[str]], store: MediaStore) -> tuple[str, ...]:
    """The outputs of other code locations that ``event``'s assets read and that do not exist."""
    selected = selected_assets(upstream, event.recipients)
    foreign = {name for asset in selected for name in upstream[asset] if name not in upstream}
    return tuple(sorted(name for name in foreign if not store.exists(store.record_uri(name, event.media_id))))


def ask(pubsub: PubSubResource, requests: Sequence[tuple[str, tuple[str, ...]]], requested_by: str) -> None:
    """Publish one bottom-up event per ``(media ID, missing outputs)`` on the upstream topic."""
    assert pubsub.upstream_topic
    pubsub.publish(pubsub.upstream_topic, [(encode_event(MediaEvent(media_id, recipients=missing)),
                                            {REQUESTED_BY_ATTRIBUTE: requested_by})
                                           for media_id, missing in requests])


def answer(held: Held, media_id: str, announced: str, status: str, reason: str) -> tuple[Held | None, Answer]:
    """``held`` after the announcement of ``announced`` for ``media_id`` (its state ``status``):
    the event still held (``None`` once answered) and what to do with it."""
    event = MediaEvent(media_id, force=held.force, recipients=held.recipients)
    if status in NOT_MADE and announced in held.missing:
        return None, Answer(event, not_made=f"input '{announced}' was {status} by its code location: "
                                            f"{reason or 'no reason given'}")
    missing = tuple(name for name in held.missing if name != announced)
    if missing:
        return Held(held.recipients, held.force, missing), Answer(event)
    return None, Answer(event, ready=True)

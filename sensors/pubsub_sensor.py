"""The Pub/Sub sensor: new-content events become ``media_ids`` partitions and runs.

Each tick:

1. acknowledges the messages of the previous tick. The cursor this tick receives is written
   by Dagster only after that tick's partitions were added and its run requests durably
   reserved, so those messages are safe to ack;
2. pulls at most ``max_messages_per_tick`` messages and decodes them (``sensors.events``);
3. dead-letters and acknowledges bad events at once, with the reason;
4. acknowledges redeliveries of messages an earlier tick already recorded;
5. returns one partitions request for the new IDs, run requests batched per
   ``sensors.planning``, and a cursor holding this tick's ack IDs and recent message IDs.

Delivery is at least once with no duplicate work. A crash before Dagster records the tick
leaves the messages unacked, so Pub/Sub redelivers them. A crash after it recorded the tick
but before the next tick acked them is caught in step 4, and in any case by the run keys.
"""

import base64
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import dagster as dg

from klio_assets.media_asset import MediaAsset
from klio_assets.partitions import media_ids
from resources.pubsub import PubSubResource
from sensors.events import BadEvent, parse_event
from sensors.planning import Received, plan_runs

REMEMBERED_MESSAGES = 50_000  # message IDs kept in the cursor to recognise redeliveries


@dataclass
class TickState:
    """What one tick hands the next, through the sensor cursor (compressed JSON)."""

    pending_acks: list[str] = field(default_factory=list)
    recent_message_ids: list[str] = field(default_factory=list)

    def dump(self) -> str:
        raw = json.dumps({"pending_acks": self.pending_acks, "recent": self.recent_message_ids})
        return base64.b64encode(zlib.compress(raw.encode(), 6)).decode("ascii")

    @classmethod
    def load(cls, cursor: str | None) -> "TickState":
        if not cursor:
            return cls()
        body = json.loads(zlib.decompress(base64.b64decode(cursor)))
        return cls(body["pending_acks"], body["recent"])


def build_pubsub_sensor(
    media_assets: Sequence[MediaAsset],
    *,
    max_ids_per_run: int,
    name: str = "pubsub_media_events",
    max_messages_per_tick: int = 10_000,
    minimum_interval_seconds: int = 5,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """A sensor that pulls the ``pubsub`` resource's subscription and requests runs of ``media_assets``."""
    upstream = {o.asset: tuple(a.upstream) for a in media_assets for o in a.outputs}

    @dg.sensor(
        name=name,
        asset_selection=[dg.AssetKey(a) for a in upstream],
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description="Turns Pub/Sub new-content events (KlioMessage, JSON or plain media ID) into "
                    "media_ids partitions and runs: top-down, bottom-up, force and ping.",
    )
    def _sensor(context: dg.SensorEvaluationContext, pubsub: PubSubResource):
        return evaluate_tick(context, pubsub, upstream, max_ids_per_run, max_messages_per_tick)

    return _sensor


def evaluate_tick(context: dg.SensorEvaluationContext, pubsub: PubSubResource,
                  upstream: dict[str, tuple[str, ...]], max_ids_per_run: int,
                  max_messages: int) -> dg.SensorResult:
    previous = TickState.load(context.cursor)
    if previous.pending_acks:
        pubsub.acknowledge(previous.pending_acks)

    recorded = set(previous.recent_message_ids)
    this_tick: set[str] = set()
    received, pending_acks, ack_now, bad = [], [], [], []
    for message in pubsub.pull(max_messages):
        message_id = message.message.message_id
        if message_id in recorded:  # an earlier tick recorded it; only its ack got lost
            ack_now.append(message.ack_id)
            continue
        if message_id in this_tick:  # delivered twice in one pull: ack with the first copy
            pending_acks.append(message.ack_id)
            continue
        this_tick.add(message_id)
        event = parse_event(message.message.data, upstream.keys())
        if isinstance(event, BadEvent):
            context.log.warning(f"bad event (message {message_id}): {event.reason}")
            bad.append((message, event.reason))
            ack_now.append(message.ack_id)
        else:
            received.append(Received(message_id, event))
            pending_acks.append(message.ack_id)

    if bad and pubsub.dead_letter_topic:
        pubsub.publish(pubsub.dead_letter_topic, [
            (m.message.data, {**m.message.attributes, "error": reason[:1024],
                              "source_message_id": m.message.message_id,
                              "source_subscription": pubsub.subscription})
            for m, reason in bad])
    if ack_now:
        pubsub.acknowledge(ack_now)

    new_ids, plans = plan_runs(received, context.instance.get_dynamic_partitions(media_ids.name),
                               upstream, max_ids_per_run)
    for plan in plans:
        mode = "ping" if plan.ping else ("top-down" if len(plan.assets) == len(upstream) else "bottom-up")
        context.log.info(f"run {plan.run_key}: {len(plan.media_ids)} media IDs, {mode}"
                         f"{', forced' if plan.force else ''}, assets {list(plan.assets)}")
    state = TickState(pending_acks, (previous.recent_message_ids + [r.message_id for r in received])
                      [-REMEMBERED_MESSAGES:])
    if not plans:
        reason = f"no new events ({len(bad)} bad)" if bad else "no new events"
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=state.dump())
    return dg.SensorResult(
        run_requests=[plan.run_request() for plan in plans],
        dynamic_partitions_requests=[media_ids.build_add_request(new_ids)] if new_ids else None,
        cursor=state.dump(),
    )

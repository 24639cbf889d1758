"""The Pub/Sub sensor: new-content events become ``media_ids`` partitions and runs.

Each tick:

1. acknowledges the messages of the previous tick. The cursor this tick receives is written
   by Dagster only after that tick's partitions were added and its run requests durably
   reserved, so those messages are safe to ack;
   then, if a run this sensor requested is still waiting in the run queue, stops: new events
   wait in Pub/Sub, and the first tick after that run starts takes them all in runs of up to
   ``max_ids_per_run``. Under load runs grow, and each run's fixed cost (a new process, its
   imports) is paid for more IDs; when the stack keeps up, nothing waits;
2. pulls at most ``max_messages_per_tick`` messages (waiting up to ``wait_for_events_s`` for the
   first, when there is none yet) and decodes them (``klio_core.wire``);
3. dead-letters and acknowledges bad events at once, with the reason;
4. acknowledges redeliveries of messages an earlier tick already recorded;
5. returns one partitions request for the new IDs, run requests batched per
   ``sensors.planning``, and a cursor holding this tick's ack IDs and the recorded messages.

Delivery is at least once with no duplicate work. A crash before Dagster records the tick
leaves the messages unacked, so Pub/Sub redelivers them. A crash after it recorded the tick
but before the next tick acked them is caught in step 4, and in any case by the run keys.

A message is known by its ``message_key``: its message ID *and* its publish time. Message IDs
alone repeat: a fresh emulator, or a recreated topic, numbers its messages from 1 again. The
recorded keys are remembered for as long as Pub/Sub may still redeliver them: until their
acknowledgement is confirmed within the ack deadline, then ``redelivery_grace_s`` more (an acked
message is redelivered only rarely, and soon); a message whose ack failed or came late is
remembered for the subscription's retention. So the cursor holds the last few minutes of
messages, not a count that grows with the stream.
"""

import base64
import json
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg
from google.api_core.exceptions import GoogleAPICallError

from klio_core.media_ids import PARTITIONS_NAME
from klio_core.wire import BadEvent, parse_event
from resources.dagster_tags import SENSOR_NAME_TAG
from resources.pubsub import ASSET_ATTRIBUTE, NOT_MADE, STATUS_ATTRIBUTE, PubSubResource, dead_letter, message_key
from sensors.planning import Received, plan_runs

REDELIVERY_GRACE_S = 120  # how long a key stays remembered after its ack was confirmed in time
MESSAGE_RETENTION_S = 7 * 24 * 3600  # Pub/Sub's default: an unacked message is redelivered until then
WAIT_FOR_EVENTS_S = 4.0  # within the daemon's 5 s between ticks, and well inside any ack deadline


@dataclass
class TickState:
    """What one tick hands the next, through the sensor cursor (compressed JSON).

    ``pending_acks``/``pending_keys``: the messages this tick recorded, acknowledged by the next
    tick; ``pulled_at``: when they were pulled (their ack deadline runs from then);
    ``remembered``: recorded message key -> the epoch second until which it is remembered.
    """

    pending_acks: list[str] = field(default_factory=list)
    pending_keys: list[str] = field(default_factory=list)
    pulled_at: float = 0.0
    remembered: dict[str, int] = field(default_factory=dict)

    def dump(self) -> str:
        by_expiry: dict[int, list[str]] = {}
        for key, expiry in self.remembered.items():
            by_expiry.setdefault(expiry, []).append(key)
        raw = json.dumps({"v": 2, "acks": self.pending_acks, "keys": self.pending_keys,
                          "pulled_at": round(self.pulled_at, 3),
                          "remembered": {str(e): keys for e, keys in sorted(by_expiry.items())}},
                         separators=(",", ":"))
        return base64.b64encode(zlib.compress(raw.encode(), 9)).decode("ascii")

    @classmethod
    def load(cls, cursor: str | None) -> "TickState":
        if not cursor:
            return cls()
        body = json.loads(zlib.decompress(base64.b64decode(cursor)))
        if body.get("v") != 2:  # the first format: bare message IDs, which cannot be told apart
            return cls(pending_acks=body.get("pending_acks", []))
        return cls(body["acks"], body["keys"], body["pulled_at"],
                   {key: int(e) for e, keys in body["remembered"].items() for key in keys})

    def forget_expired(self, now: float) -> None:
        self.remembered = {k: e for k, e in self.remembered.items() if e > now}


def build_pubsub_sensor(
    upstream: Mapping[str, Sequence[str]],
    *,
    max_ids_per_run: int,
    name: str = "pubsub_media_events",
    max_messages_per_tick: int = 10_000,
    minimum_interval_seconds: int = 1,
    wait_for_events_s: float = WAIT_FOR_EVENTS_S,
    hold_while_queued: bool = True,
    redelivery_grace_s: int = REDELIVERY_GRACE_S,
    message_retention_s: int = MESSAGE_RETENTION_S,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """A sensor that pulls the ``pubsub`` resource's subscription and requests runs of the media
    assets named by ``upstream`` (every media asset -> the media assets it reads; see
    ``pipelines.graph.asset_graph``). A top-down event runs all of them.
    ``hold_while_queued``: pull nothing while a run of this sensor waits in the queue (step 1).

    Dagster's sensor daemon looks at its sensors every 5 s, and runs a tick only if at least
    ``minimum_interval_seconds`` have passed since the last one; an interval of 5 s itself would
    skip every other look (4.99 s < 5 s). So the interval is 1 s and the daemon sets the pace: a
    tick every 5 s. A tick that finds no message waits up to ``wait_for_events_s`` for the first
    one, so an event published while a tick listens becomes a run at once, not at the next tick."""
    graph = {asset: tuple(inputs) for asset, inputs in upstream.items()}

    @dg.sensor(
        name=name,
        asset_selection=[dg.AssetKey(a) for a in graph],
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description="Turns Pub/Sub new-content events (KlioMessage, JSON or plain media ID) into "
                    "media_ids partitions and runs: top-down, bottom-up, force and ping. It ticks each "
                    "time Dagster's sensor daemon looks, every 5 s: the minimum interval shown "
                    f"({minimum_interval_seconds} s) only lets every look through.",
    )
    def _sensor(context: dg.SensorEvaluationContext, pubsub: PubSubResource):
        return evaluate_tick(context, pubsub, graph, max_ids_per_run, max_messages_per_tick,
                             redelivery_grace_s=redelivery_grace_s, message_retention_s=message_retention_s,
                             wait_s=wait_for_events_s, hold_while_queued_as=name if hold_while_queued else None)

    return _sensor


def evaluate_tick(context: dg.SensorEvaluationContext, pubsub: PubSubResource,
                  upstream: dict[str, tuple[str, ...]], max_ids_per_run: int, max_messages: int, *,
                  redelivery_grace_s: int = REDELIVERY_GRACE_S, message_retention_s: int = MESSAGE_RETENTION_S,
                  clock: Callable[[], float] = time.time, wait_s: float = 0.0,
                  hold_while_queued_as: str | None = None) -> dg.SensorResult:
    state = TickState.load(context.cursor)
    _acknowledge_recorded(context, pubsub, state, clock(), redelivery_grace_s)
    waiting = _queued_runs(context.instance, hold_while_queued_as) if hold_while_queued_as else 0
    if waiting:
        state.pending_acks, state.pending_keys, state.pulled_at = [], [], clock()
        return dg.SensorResult(skip_reason=dg.SkipReason(
            f"{waiting} run(s) of this sensor still wait in the queue: new events stay in Pub/Sub "
            "until it starts, then go into runs together"), cursor=state.dump())
    pulled_at = clock()
    state.forget_expired(pulled_at)

    this_tick: set[str] = set()
    received, pending_acks, pending_keys, ack_now, bad = [], [], [], [], []
    for message in pubsub.pull(max_messages, wait_s=wait_s, subscription_path=pubsub.sensor_subscription_path):
        key = message_key(message.message)
        if key in state.remembered:  # an earlier tick recorded it; only its ack got lost
            ack_now.append((message.ack_id, key))
            continue
        if key in this_tick:  # delivered twice in one pull: ack with the first copy
            pending_acks.append(message.ack_id)
            continue
        this_tick.add(key)
        event = parse_event(message.message.data, upstream.keys())
        if isinstance(event, BadEvent):
            context.log.warning(f"bad event (message {message.message.message_id}): {event.reason}")
            bad.append((message, key, event.reason))
            ack_now.append((message.ack_id, key))
        elif message.message.attributes.get(STATUS_ATTRIBUTE) in NOT_MADE:
            ack_now.append((message.ack_id, key))  # an upstream output that was not made: nothing to run
        else:
            received.append(Received(key, event, message.message.attributes.get(ASSET_ATTRIBUTE)))
            pending_acks.append(message.ack_id)
            pending_keys.append(key)

    if bad and pubsub.dead_letter_topic:
        pubsub.publish(pubsub.dead_letter_topic,
                       [dead_letter(m.message, reason, pubsub.subscription) for m, _, reason in bad])
    if ack_now:
        pubsub.acknowledge([ack_id for ack_id, _ in ack_now], pubsub.sensor_subscription_path)
        acked_at = clock()
        state.remembered.update({key: int(acked_at + redelivery_grace_s) for _, key in ack_now})

    registered, whole_catalogue = _registered(context.instance, received)
    new_ids, plans = plan_runs(received, registered, upstream, max_ids_per_run, whole_catalogue)
    for plan in plans:
        mode = "ping" if plan.ping else ("top-down" if len(plan.assets) == len(upstream) else "bottom-up")
        context.log.info(f"run {plan.run_key}: {len(plan.media_ids)} media IDs, {mode}"
                         f"{', forced' if plan.force else ''}, assets {list(plan.assets)}")
    # Until the next tick confirms their ack, recorded messages may come back for as long as
    # Pub/Sub keeps them.
    state.remembered.update({key: int(pulled_at + message_retention_s) for key in pending_keys})
    state.pending_acks, state.pending_keys, state.pulled_at = pending_acks, pending_keys, pulled_at
    if not plans:
        reason = f"no new events ({len(bad)} bad)" if bad else "no new events"
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=state.dump())
    return dg.SensorResult(
        run_requests=[plan.run_request() for plan in plans],
        dynamic_partitions_requests=[dg.AddDynamicPartitionsRequest(PARTITIONS_NAME, new_ids)] if new_ids else None,
        cursor=state.dump(),
    )


def _registered(instance: dg.DagsterInstance, received: Sequence[Received]) -> tuple[Sequence[str], bool]:
    """What ``plan_runs`` needs of ``media_ids``: the received IDs already in it, each looked up
    alone (an indexed query), or the whole catalogue in its order when two or more are, to put
    neighbours into one run. New content, the stream's common case, never lists the catalogue,
    which at 1,000,000 IDs takes 1.8 s (dagster-io/dagster#29567 proposes batched lookups)."""
    ids = dict.fromkeys(item.event.media_id for item in received)
    known = [media_id for media_id in ids if instance.has_dynamic_partition(PARTITIONS_NAME, media_id)]
    if len(known) < 2:
        return known, False
    return instance.get_dynamic_partitions(PARTITIONS_NAME), True


def _queued_runs(instance: dg.DagsterInstance, sensor_name: str) -> int:
    """How many runs that the sensor ``sensor_name`` requested have not been launched yet."""
    return instance.get_runs_count(dg.RunsFilter(
        statuses=[dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED],
        tags={SENSOR_NAME_TAG: sensor_name}))


def _acknowledge_recorded(context: dg.SensorEvaluationContext, pubsub: PubSubResource, state: TickState,
                          now: float, redelivery_grace_s: int) -> None:
    """Acknowledge the previous tick's messages (Dagster has recorded that tick). Acked within
    their deadline, they are remembered for ``redelivery_grace_s`` more; otherwise Pub/Sub has
    redelivered or will redeliver them, and they stay remembered for its retention."""
    if not state.pending_acks:
        return
    try:
        pubsub.acknowledge(state.pending_acks, pubsub.sensor_subscription_path)
    except GoogleAPICallError as e:  # e.g. ack IDs of a restarted emulator: they come back, and are known
        context.log.warning(f"could not acknowledge {len(state.pending_acks)} recorded message(s) "
                            f"({type(e).__name__}: {e}); their redeliveries will be recognised")
        return
    if now - state.pulled_at < pubsub.ack_deadline_seconds:
        state.remembered.update({key: int(now + redelivery_grace_s) for key in state.pending_keys})

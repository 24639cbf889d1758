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
5. in a code location built on another's outputs, holds bottom-up events whose inputs from
   there are missing and asks for them, and runs a held event once they are announced
   (``sensors.upstream_requests``);
6. returns one partitions request for the new IDs, run requests batched per
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
import dataclasses
import json
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg
from google.api_core.exceptions import GoogleAPICallError

from klio_core.media_ids import PARTITIONS_NAME
from klio_core.media_store import MediaStore
from klio_core.wire import BadEvent, parse_event
from resources.dagster_tags import SENSOR_NAME_TAG
from resources.pubsub import (
    ASSET_ATTRIBUTE,
    NOT_MADE,
    REASON_ATTRIBUTE,
    STATUS_ATTRIBUTE,
    PubSubResource,
    dead_letter,
    message_key,
)
from resources.storage import GCSMediaStorage, LocalMediaStorage
from sensors.planning import Received, plan_runs
from sensors.upstream_requests import Held, answer, ask, missing_inputs

REDELIVERY_GRACE_S = 120  # how long a key stays remembered after its ack was confirmed in time
MESSAGE_RETENTION_S = 7 * 24 * 3600  # Pub/Sub's default: an unacked message is redelivered until then
WAIT_FOR_EVENTS_S = 4.0  # within the daemon's 5 s between ticks, and well inside any ack deadline


@dataclass
class TickState:
    """What one tick hands the next, through the sensor cursor (compressed JSON).

    ``pending_acks``/``pending_keys``: the messages this tick recorded, acknowledged by the next
    tick; ``pulled_at``: when they were pulled (their ack deadline runs from then);
    ``remembered``: recorded message key -> the epoch second until which it is remembered;
    ``held``: media ID -> the bottom-up event held until another code location announces its
    inputs (``sensors.upstream_requests``).
    """

    pending_acks: list[str] = field(default_factory=list)
    pending_keys: list[str] = field(default_factory=list)
    pulled_at: float = 0.0
    remembered: dict[str, int] = field(default_factory=dict)
    held: dict[str, Held] = field(default_factory=dict)

    def dump(self) -> str:
        by_expiry: dict[int, list[str]] = {}
        for key, expiry in self.remembered.items():
            by_expiry.setdefault(expiry, []).append(key)
        raw = json.dumps({"v": 2, "acks": self.pending_acks, "keys": self.pending_keys,
                          "pulled_at": round(self.pulled_at, 3),
                          "remembered": {str(e): keys for e, keys in sorted(by_expiry.items())},
                          **({"held": {m: h.to_json() for m, h in self.held.items()}} if self.held else {})},
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
                   {key: int(e) for e, keys in body["remembered"].items() for key in keys},
                   {m: Held.from_json(h) for m, h in body.get("held", {}).items()})

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
    asks_upstream: bool = False,
) -> dg.SensorDefinition:
    """A sensor that pulls the ``pubsub`` resource's subscription and requests runs of the media
    assets named by ``upstream`` (every media asset -> the media assets it reads; see
    ``pipelines.graph.asset_graph``). A top-down event runs all of them.
    ``hold_while_queued``: pull nothing while a run of this sensor waits in the queue (step 1).

    Dagster's sensor daemon looks at its sensors every 5 s, and runs a tick only if at least
    ``minimum_interval_seconds`` have passed since the last one; an interval of 5 s itself would
    skip every other look (4.99 s < 5 s). So the interval is 1 s and the daemon sets the pace: a
    tick every 5 s. A tick that finds no message waits up to ``wait_for_events_s`` for the first
    one, so an event published while a tick listens becomes a run at once, not at the next tick.

    ``asks_upstream``: ask the ``pubsub`` resource's ``upstream_topic`` for missing inputs from
    another code location (step 5); the sensor then also reads the ``media_storage`` resource."""
    graph = {asset: tuple(inputs) for asset, inputs in upstream.items()}

    sensor = dg.sensor(
        name=name,
        asset_selection=[dg.AssetKey(a) for a in graph],
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description="Turns Pub/Sub new-content events (KlioMessage, JSON or plain media ID) into "
                    "media_ids partitions and runs: top-down, bottom-up, force and ping. It ticks each "
                    "time Dagster's sensor daemon looks, every 5 s: the minimum interval shown "
                    f"({minimum_interval_seconds} s) only lets every look through.",
    )

    def _tick(context: dg.SensorEvaluationContext, pubsub: PubSubResource, store: MediaStore | None = None):
        return evaluate_tick(context, pubsub, graph, max_ids_per_run, max_messages_per_tick,
                             redelivery_grace_s=redelivery_grace_s, message_retention_s=message_retention_s,
                             wait_s=wait_for_events_s, hold_while_queued_as=name if hold_while_queued else None,
                             upstream_store=store, requested_by=name)

    if asks_upstream:
        def _sensor(context: dg.SensorEvaluationContext, pubsub: PubSubResource,
                    media_storage: dg.ResourceParam[LocalMediaStorage | GCSMediaStorage]):
            return _tick(context, pubsub, media_storage.store())
    else:
        def _sensor(context: dg.SensorEvaluationContext, pubsub: PubSubResource):  # type: ignore[misc]
            return _tick(context, pubsub)

    return sensor(_sensor)


def evaluate_tick(context: dg.SensorEvaluationContext, pubsub: PubSubResource,
                  upstream: dict[str, tuple[str, ...]], max_ids_per_run: int, max_messages: int, *,
                  redelivery_grace_s: int = REDELIVERY_GRACE_S, message_retention_s: int = MESSAGE_RETENTION_S,
                  clock: Callable[[], float] = time.time, wait_s: float = 0.0,
                  hold_while_queued_as: str | None = None, upstream_store: MediaStore | None = None,
                  requested_by: str = "") -> dg.SensorResult:
    """One tick (module docstring). ``upstream_store``: where to look for the outputs of another
    code location, to ask ``pubsub.upstream_topic`` for those missing (step 5); none: ask nothing."""
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
    asks: list[tuple[str, tuple[str, ...]]] = []
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
        attributes = message.message.attributes
        if isinstance(event, BadEvent):
            context.log.warning(f"bad event (message {message.message.message_id}): {event.reason}")
            bad.append((message, key, event.reason))
            ack_now.append((message.ack_id, key))
            continue
        announced = attributes.get(ASSET_ATTRIBUTE)
        if announced and not event.recipients and event.media_id in state.held:  # an answer to a request
            still, outcome = answer(state.held.pop(event.media_id), event.media_id, announced,
                                    attributes.get(STATUS_ATTRIBUTE, ""), attributes.get(REASON_ATTRIBUTE, ""))
            if still:
                state.held[event.media_id] = still
            elif outcome.not_made:
                context.log.warning(f"[{event.media_id}] dropped for {', '.join(outcome.event.recipients)}: "
                                    f"{outcome.not_made}")
            if outcome.ready or outcome.not_made:
                received.append(Received(key, outcome.event, not_made=outcome.not_made))
        elif attributes.get(STATUS_ATTRIBUTE) in NOT_MADE:
            ack_now.append((message.ack_id, key))  # an upstream output that was not made: nothing to run
            continue
        elif upstream_store and event.recipients and not event.ping and _hold(state, event, upstream, upstream_store):
            asks.append((event.media_id, state.held[event.media_id].missing))
        else:
            received.append(Received(key, event, announced))
        pending_acks.append(message.ack_id)
        pending_keys.append(key)

    if asks:  # before the cursor that holds them is recorded: a failed tick asks again
        ask(pubsub, asks, requested_by)
        for media_id, missing in asks:
            context.log.info(f"[{media_id}] asked the code location upstream for {list(missing)} on "
                             f"{pubsub.upstream_topic}, for {', '.join(state.held[media_id].recipients)}")
    if bad and pubsub.dead_letter_topic:
        pubsub.publish(pubsub.dead_letter_topic,
                       [dead_letter(m.message, reason, pubsub.subscription) for m, _, reason in bad])
    if ack_now:
        pubsub.acknowledge([ack_id for ack_id, _ in ack_now], pubsub.sensor_subscription_path)
        acked_at = clock()
        state.remembered.update({key: int(acked_at + redelivery_grace_s) for _, key in ack_now})

    held_ids = [media_id for media_id, _ in asks]  # a new ID is a partition from its first event
    registered, whole_catalogue = _registered(context.instance, [item.event.media_id for item in received] + held_ids)
    new_ids, plans = plan_runs(received, registered, upstream, max_ids_per_run, whole_catalogue)
    new_ids += [media_id for media_id in dict.fromkeys(held_ids) if media_id not in registered and media_id not in new_ids]
    for plan in plans:
        mode = "ping" if plan.ping else ("top-down" if len(plan.assets) == len(upstream) else "bottom-up")
        context.log.info(f"run {plan.run_key}: {len(plan.media_ids)} media IDs, {mode}"
                         f"{', forced' if plan.force else ''}{', dropped: ' + plan.not_made if plan.not_made else ''}, "
                         f"assets {list(plan.assets)}")
    # Until the next tick confirms their ack, recorded messages may come back for as long as
    # Pub/Sub keeps them.
    state.remembered.update({key: int(pulled_at + message_retention_s) for key in pending_keys})
    state.pending_acks, state.pending_keys, state.pulled_at = pending_acks, pending_keys, pulled_at
    partitions = [dg.AddDynamicPartitionsRequest(PARTITIONS_NAME, new_ids)] if new_ids else None
    if not plans:
        reason = f"no new events ({len(bad)} bad)" if bad else "no new events"
        if asks:
            reason = f"{len(asks)} bottom-up event(s) wait for their inputs from the code location upstream"
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), dynamic_partitions_requests=partitions,
                               cursor=state.dump())
    return dg.SensorResult(run_requests=[plan.run_request() for plan in plans],
                           dynamic_partitions_requests=partitions, cursor=state.dump())


def _hold(state: TickState, event, upstream: Mapping[str, Sequence[str]], store: MediaStore) -> bool:
    """Hold ``event`` if inputs it needs from another code location are missing (merged into an
    event already held for its media ID, which was asked for the same inputs)."""
    missing = missing_inputs(event, upstream, store)
    if not missing:
        return False
    earlier = state.held.get(event.media_id)
    if earlier:
        recipients = tuple(sorted({*earlier.recipients, *event.recipients}))
        missing = tuple(sorted({*earlier.missing, *missing}))
        event = dataclasses.replace(event, recipients=recipients, force=earlier.force or event.force)
    state.held[event.media_id] = Held(event.recipients, event.force, missing)
    return True


def _registered(instance: dg.DagsterInstance, received: Sequence[str]) -> tuple[Sequence[str], bool]:
    """What ``plan_runs`` needs of ``media_ids``: the received IDs already in it, each looked up
    alone (an indexed query), or the whole catalogue in its order when two or more are, to put
    neighbours into one run. New content, the stream's common case, never lists the catalogue,
    which at 1,000,000 IDs takes 1.8 s (dagster-io/dagster#29567 proposes batched lookups)."""
    ids = dict.fromkeys(received)
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

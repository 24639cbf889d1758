"""The media stream: ONE long-running Dagster run (``media_stream_job``) that takes new-content
events from Pub/Sub and passes each media ID through the same per-item chain as a backfill
(``pipelines.transforms.ProcessEventFn``: the same ``@media_asset`` functions, freshness records,
force, ping, bottom-up, retries, timeouts, checks, event output, per-worker ``setup=``), on warm
workers, and shows each ID in Dagster as soon as it is done.

Per message:

1. decode it (``klio_core.wire``); a bad event is dead-lettered with its reason and acknowledged;
   a ping is recorded as ``status: ping`` observations and passed to the event output;
2. make the media ID a ``media_ids`` partition, if it is not one yet (before its first report);
3. run the event on a warm worker: the dev stack's ``dask.distributed`` workers when the
   ``beam_runner`` is the DaskRunner, else a thread of this run's process. Events for an ID
   already in flight wait for it (the second then finds fresh outputs, unless forced);
4. report every output of the ID, as the batch step does (``media_run.report_output``):
   materializations of exactly that partition, with the run that wrote them; a failed check;
   a dropped or failed ID's observation with its reason. IDs that finish together are reported
   together, one dependency level at a time, each level's events stored in one write
   (``resources.sqlite_event_log.log_asset_events``) before the next level points at them.
   A dropped or failed ID is then published to the retry topic as a bottom-up event of
   what it lacks, and the Pub/Sub sensor runs it as an ordinary batch run, so that a second
   failure shows Failed by Dagster's own rule;
5. then, and only then, acknowledge the message. A crash anywhere before leaves it unacked, and
   Pub/Sub delivers it again: its outputs are fresh by then and skipped, and a fresh output
   Dagster has no materialization of is reported from its record. So every ID ends with one
   materialization per asset, and only the IDs in flight at a crash are computed twice.

Messages come by long-polling pulls, at most ``max_in_flight`` held at a time, whose leases
are extended while they are worked on (``Intake``). Terminate (or a successor, below)
drains the stream: it stops pulling and nacks every message not yet acknowledged, which Pub/Sub
delivers again at once, to the next stream run. A stream run ends by itself once a newer stream
run has started: ``sensors.stream_sensor`` starts that successor after ``rotate_after_s``, so a
run's page and event log stay bounded, and starts a new stream whenever none runs (a crash, a
restart), unless a user terminated the last one.

With a Dataflow streaming job doing the work (``pipelines.streaming``), the same run reads the
job's result messages instead of events, and reports and acknowledges them the same way.
"""

import collections
import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import cloudpickle
import dagster as dg
from google.api_core.exceptions import GoogleAPICallError, RetryError
from pydantic import Field

from klio_assets.framework.media_asset import MediaAsset
from klio_assets.framework.media_run import (
    Provenance,
    Tally,
    UpstreamPointers,
    log_problems,
    ping_events,
    publish_event_output,
    report_output,
)
from klio_core.media_ids import PARTITIONS_NAME
from klio_core.records import ItemResult, ItemStatus
from klio_core.wire import BadEvent, MediaEvent, encode_event, parse_event
from pipelines import stream_worker
from pipelines.graph import asset_graph, dependency_levels, downstream_of, tasks_for_event
from pipelines.streaming import decode_result
from pipelines.transforms import ProcessEventFn
from resources.dagster_tags import MAX_RETRIES_TAG
from resources.pubsub import ASSET_ATTRIBUTE, NOT_MADE, REASON_ATTRIBUTE, STATUS_ATTRIBUTE, dead_letter
from resources.sqlite_event_log import log_asset_events

STREAM_JOB = "media_stream_job"
STREAM_TAG = "klio/stream"


class StreamConfig(dg.Config):
    max_in_flight: int = Field(default=8, ge=1, description=(
        "Messages worked on at a time (Pub/Sub flow control): enough to keep every warm worker busy."))
    progress_interval_s: float = Field(default=10.0, gt=0, description=(
        "Seconds between the progress lines in the run's log (and its checks for a successor)."))
    stop_after_idle_s: float | None = Field(default=None, gt=0, description=(
        "End the run once nothing has been in flight and no message has come for this long (to work "
        "off a backlog and stop). Default: run until terminated or succeeded by a newer stream run."))
    results_subscription: str | None = Field(default=None, description=(
        "Read a streaming Beam job's result messages from this subscription instead of running the "
        "events here (Dataflow: pipelines.streaming)."))


def build_media_stream_job(media_assets: Sequence[MediaAsset], *, retry_topic: str | None = None,
                           name: str = STREAM_JOB) -> dg.JobDefinition:
    """The long-running stream over ``media_assets`` (upstream first). A dropped or failed ID is
    published to ``retry_topic`` for a batch run, if set."""

    @dg.op(name="media_stream", required_resource_keys={"media_storage", "beam_runner", "pubsub"},
           description="Takes new-content events from Pub/Sub for as long as it runs; each media ID's "
                       "outputs show in Dagster as it finishes.")
    def media_stream(context: dg.OpExecutionContext, config: StreamConfig) -> None:
        MediaStream(context, media_assets, config, retry_topic).run()

    # The keeper sensor alone restarts a stream: the daemon's run retries would start a second one
    # beside the keeper's after a crash.
    @dg.job(name=name, tags={STREAM_TAG: "true", MAX_RETRIES_TAG: "0"}, executor_def=dg.in_process_executor,
            description="The media stream (Klio's streaming job): one run for as long as it runs.")
    def stream_job():
        media_stream()

    return stream_job


class MediaStream:
    def __init__(self, context: dg.OpExecutionContext, media_assets: Sequence[MediaAsset], config: StreamConfig,
                 retry_topic: str | None):
        self.context = context
        self.config = config
        self.retry_topic = retry_topic
        self.pubsub = context.resources.pubsub
        self.store = context.resources.media_storage.store()
        self.media = {media.name: media for media in media_assets}
        self.tasks = [media.task(None, run_id=context.run_id) for media in media_assets]
        self.provenance = {task.name: Provenance.of(self.media[task.name], task) for task in self.tasks}
        self.known_assets = frozenset(o.asset for task in self.tasks for o in task.outputs)
        self.graph = asset_graph(self.tasks)
        self.levels = dependency_levels(self.tasks)
        self.inbox: queue.Queue = queue.Queue()
        self.in_flight: dict[str, Any] = {}  # media ID -> its message
        self.waiting: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self.asked: dict[str, tuple[Any, MediaEvent, set[str]]] = {}  # media ID -> held message, event, outputs asked for
        self.partitions: set[str] = set()
        self.tally = Tally()
        self.counts: collections.Counter = collections.Counter()
        self.started = time.time()

    # --- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        results_mode = self.config.results_subscription is not None
        executor = None if results_mode else _executor(self.context.resources.beam_runner,
                                                        ProcessEventFn(self.tasks, self.store), self.context.run_id)
        subscription = (self.pubsub.subscriber.subscription_path(self.pubsub.project, self.config.results_subscription)
                        if results_mode else self.pubsub.subscription_path)
        intake = Intake(self.pubsub.subscriber, subscription, self.config.max_in_flight,
                        self.pubsub.ack_deadline_seconds, lambda message: self.inbox.put(("message", message)))
        self.context.log.info(f"streaming from {subscription}, up to {self.config.max_in_flight} in flight, on "
                              f"{executor.where if executor else 'a streaming Beam job (its result messages)'}")
        next_progress = time.monotonic() + self.config.progress_interval_s
        last_busy = time.monotonic()
        try:
            while True:
                items = self._next_items()
                if not items:
                    idle_s = time.monotonic() - last_busy
                    if self.config.stop_after_idle_s and not self.in_flight and not self.asked \
                            and idle_s >= self.config.stop_after_idle_s:
                        self.context.log.info(f"nothing to do for {idle_s:.0f} s: the stream stops here")
                        break
                else:
                    last_busy = time.monotonic()
                for kind, item in items:
                    if kind == "message":
                        self._take(item, executor)
                finished = [item for kind, item in items if kind == "done"]
                if finished:
                    self._finish(finished, executor)
                if time.monotonic() >= next_progress:
                    next_progress = time.monotonic() + self.config.progress_interval_s
                    self._log_progress()
                    if self._successor_started():
                        self.context.log.info("a newer stream run has started: this one stops here")
                        break
        finally:
            intake.stop()
            self._drain()
            if executor is not None:
                executor.close()
            self._log_progress()

    def _next_items(self) -> list[tuple[str, Any]]:
        """What the inbox holds: waits up to 0.5 s for the first item, then takes every item
        already there, so that IDs finished together are reported together."""
        try:
            items = [self.inbox.get(timeout=0.5)]
        except queue.Empty:
            return []
        while True:
            try:
                items.append(self.inbox.get_nowait())
            except queue.Empty:
                return items

    def _drain(self) -> None:
        """Nack every message not acknowledged yet: Pub/Sub delivers them again at once."""
        pending = list(self.in_flight.values()) + [m for waiting in self.waiting.values() for m, _ in waiting] \
            + [held for held, _, _ in self.asked.values()]
        while True:
            try:
                kind, item = self.inbox.get_nowait()
            except queue.Empty:
                break
            pending.append(item if kind == "message" else item[0])
        if pending:
            pending[0].intake.settle(pending, ack=False)  # one request
            self.context.log.info(f"drained: {len(pending)} message(s) not acknowledged go back to Pub/Sub")
        self.in_flight.clear()
        self.waiting.clear()
        self.asked.clear()

    # --- one message ----------------------------------------------------------------------------

    def _take(self, message, executor) -> None:
        self.counts["messages"] += 1
        if self.config.results_subscription is not None:
            try:
                done, results = decode_result(message.data, self.known_assets)
            except (ValueError, KeyError) as e:
                self.context.log.error(f"bad result message {message.message_id}: {e}")
                message.ack()
                return
            self._ensure_partition(done.media_id)
            self.report([(message, done, results)])
            return
        event = parse_event(message.data, self.known_assets)
        if isinstance(event, BadEvent):
            self._dead_letter(message, event.reason)
            return
        announced = message.pulled.attributes.get(ASSET_ATTRIBUTE)
        if announced and not event.recipients and announced not in self.graph:
            # another code location's output: the answer to a request of this stream, or else
            # what reads it here, as a bottom-up event for them (nothing, if it was not made)
            if event.media_id in self.asked:
                self._answered(message, event.media_id, announced, executor)
                return
            readers = downstream_of(self.graph, announced)
            if not readers or message.pulled.attributes.get(STATUS_ATTRIBUTE) in NOT_MADE:
                message.ack()
                return
            event = dataclasses.replace(event, recipients=tuple(sorted(readers)))
        elif event.recipients and not event.ping and self.pubsub.upstream_topic and self._ask_upstream(message, event):
            return
        if event.ping:
            self._ping(message, event)
            return
        if event.media_id in self.in_flight:
            self.waiting[event.media_id].append((message, event))
            return
        self._start(message, event, executor)

    def _ask_upstream(self, message, event: MediaEvent) -> bool:
        """For a bottom-up event whose inputs from another code location are missing: ask that
        location for exactly those (a bottom-up event on its input topic, as Klio's
        KlioTriggerUpstream) and hold the message, on no worker, until it announces them."""
        tasks = tasks_for_event(self.tasks, event.recipients, event.force)
        external = sorted({u for task in tasks for u in task.upstream if u not in self.graph})
        missing = {u for u in external if not self.store.exists(self.store.record_uri(u, event.media_id))}
        if not missing:
            return False
        self._ensure_partition(event.media_id)
        self.pubsub.publish(self.pubsub.upstream_topic, [(encode_event(MediaEvent(
            event.media_id, recipients=tuple(sorted(missing)))), {"requested_by": self.context.job_name})])
        self.asked[event.media_id] = (message, event, missing)
        self.context.log.info(f"[{event.media_id}] asked the code location upstream for {sorted(missing)} "
                              f"on {self.pubsub.upstream_topic}, for {', '.join(event.recipients)}")
        return True

    def _answered(self, message, media_id: str, announced: str, executor) -> None:
        """An announcement for a media ID this stream asked for: when every asked output is
        there, the held event runs; if one was not made, its recipients are dropped with the
        upstream's reason."""
        held, event, missing = self.asked[media_id]
        attributes = message.pulled.attributes
        missing.discard(announced)
        if attributes.get(STATUS_ATTRIBUTE) in NOT_MADE:
            del self.asked[media_id]
            reason = (f"input '{announced}' was {attributes[STATUS_ATTRIBUTE]} by its code location: "
                      f"{attributes.get(REASON_ATTRIBUTE, 'no reason given')}")
            dropped = [ItemResult(media_id, ItemStatus.DROPPED, reason, task=task.name)
                       for task in tasks_for_event(self.tasks, event.recipients, event.force)]
            self.report([(held, dataclasses.replace(event, recipients=()), dropped)])
        elif not missing:
            del self.asked[media_id]
            if media_id in self.in_flight:
                self.waiting[media_id].append((held, event))
            else:
                self._start(held, event, executor)
        message.ack()

    def _start(self, message, event: MediaEvent, executor) -> None:
        self._ensure_partition(event.media_id)
        self.in_flight[event.media_id] = message
        future = executor.submit(event)
        future.add_done_callback(lambda f: self.inbox.put(("done", (message, event, f))))

    def _finish(self, finished: Sequence[tuple[Any, MediaEvent, Any]], executor) -> None:
        """IDs whose work is done (one message each, distinct IDs): reported together, then the
        next event waiting for each ID starts."""
        reports = []
        for message, event, future in finished:
            try:
                results = future.result()
            except Exception as e:  # the worker died, or its result could not come back
                results = [ItemResult(event.media_id, ItemStatus.FAILED, f"on the worker: {type(e).__name__}: {e}",
                                      task=task.name)
                           for task in tasks_for_event(self.tasks, event.recipients, event.force)]
            reports.append((message, event, results))
        self.report(reports)
        for _, event, _ in finished:
            media_id = event.media_id
            del self.in_flight[media_id]
            if self.waiting.get(media_id):
                next_message, next_event = self.waiting[media_id].popleft()
                self._start(next_message, next_event, executor)
            else:
                self.waiting.pop(media_id, None)

    def report(self, reports: Sequence[tuple[Any, MediaEvent, Sequence[ItemResult]]]) -> None:
        """Every event of these IDs (one message each) stored, their event output and retries
        published, then the acks.

        The Dagster events are stored one dependency level at a time, each level's in one write
        (``log_asset_events``), so that a downstream materialization's tags can point at its
        upstream's stored materialization (``UpstreamPointers``, read once per upstream asset)."""
        pointers = UpstreamPointers(self.context.instance, [event.media_id for _, event, _ in reports])
        by_task: dict[str, dict[str, ItemResult]] = collections.defaultdict(dict)
        for _, event, results in reports:
            for result in results:
                by_task[result.task][event.media_id] = result
                self.counts[str(result.status)] += 1
        for level in self.levels:
            dagster_events = []
            for name in level:
                by_id = by_task.get(name)
                if by_id:
                    self.tally.add(name, list(by_id.values()))
                    for output in self.media[name].outputs:
                        dagster_events += report_output(self.context, self.provenance[name], pointers, output,
                                                        by_id, self.tally)
            if dagster_events:
                log_asset_events(self.context, dagster_events)
        self._publish_event_output(reports, by_task)
        retries = []
        for _, event, results in reports:
            log_problems(self.context, results)
            lacking = [o.asset for result in results if result.status in (ItemStatus.DROPPED, ItemStatus.FAILED)
                       for o in self.media[result.task].outputs]
            if lacking and self.retry_topic:
                retry = MediaEvent(event.media_id, force=event.force, recipients=tuple(lacking))
                retries.append((encode_event(retry), {"reason": "failed or dropped in the stream"}))
        if retries:
            self.pubsub.publish(self.retry_topic, retries)
        self.counts["ids"] += len(reports)
        Held.ack_all([message for message, _, _ in reports])

    def _publish_event_output(self, reports: Sequence[tuple[Any, MediaEvent, Sequence[ItemResult]]],
                              by_task: dict[str, dict[str, ItemResult]]) -> None:
        """Each media asset with an event output announces its outputs for these IDs (``by_task``:
        their results by task and media ID), forced events apart. A failed or dropped ID is
        announced by its batch retry, if it has one (a second try)."""
        for name, media in self.media.items():
            if not media.event_output:
                continue
            for force in (False, True):
                statuses, reasons = {}, {}
                for _, event, _ in reports:
                    result = by_task.get(name, {}).get(event.media_id)
                    if result is None or event.force != force or not (
                            result.status in (ItemStatus.MATERIALIZED, ItemStatus.SKIPPED) or not self.retry_topic):
                        continue
                    statuses[event.media_id] = str(result.status)
                    if result.reason:
                        reasons[event.media_id] = result.reason
                if statuses:
                    self.counts["event output"] += publish_event_output(
                        self.context, media, media.outputs, list(statuses), statuses, force=force,
                        reasons=reasons or None, log=False)

    def _ping(self, message, event: MediaEvent) -> None:
        tasks = tasks_for_event(self.tasks, event.recipients, False)
        self._ensure_partition(event.media_id)
        log_asset_events(self.context, list(ping_events(self.context, [o.asset for t in tasks for o in t.outputs],
                                                        [event.media_id])))
        for task in tasks:
            media = self.media[task.name]
            if media.event_output:  # Klio passes pings downstream
                publish_event_output(self.context, media, media.outputs, [event.media_id], "ping")
        message.ack()

    def _dead_letter(self, message, reason: str) -> None:
        self.context.log.warning(f"bad event (message {message.message_id}): {reason}")
        self.counts["bad"] += 1
        if self.pubsub.dead_letter_topic:
            self.pubsub.publish(self.pubsub.dead_letter_topic,
                                [dead_letter(message.pulled, reason, self.pubsub.subscription)])
        message.ack()

    def _ensure_partition(self, media_id: str) -> None:
        if media_id not in self.partitions:
            instance = self.context.instance
            if not instance.has_dynamic_partition(PARTITIONS_NAME, media_id):
                instance.add_dynamic_partitions(PARTITIONS_NAME, [media_id])
            self.partitions.add(media_id)

    # --- bookkeeping ----------------------------------------------------------------------------

    def _log_progress(self) -> None:
        states = ", ".join(f"{self.counts[str(s)]} {s}" for s in ItemStatus)
        self.context.log.info(f"stream: {self.counts['ids']} media IDs done ({states} asset results), "
                              f"{len(self.in_flight)} in flight, {self.counts['bad']} bad events, "
                              f"{self.counts['event output']} event output messages, "
                              f"up {time.time() - self.started:.0f} s")

    def _successor_started(self) -> bool:
        """Whether a stream run created after this one has started (``sensors.stream_sensor``)."""
        records = self.context.instance.get_run_records(
            dg.RunsFilter(job_name=self.context.job_name, statuses=[dg.DagsterRunStatus.STARTED]), limit=5)
        mine = next((r.create_timestamp for r in records if r.dagster_run.run_id == self.context.run_id), None)
        return mine is not None and any(r.create_timestamp > mine for r in records)


class Held:
    """A pulled message this stream holds until it acknowledges or gives it back."""

    def __init__(self, received, intake: "Intake"):
        self.ack_id = received.ack_id
        self.pulled = received.message
        self.data = received.message.data
        self.message_id = received.message.message_id
        self.intake = intake

    def ack(self) -> None:
        self.intake.settle([self], ack=True)

    def nack(self) -> None:
        self.intake.settle([self], ack=False)

    @staticmethod
    def ack_all(messages: Sequence["Held"]) -> None:
        """Acknowledge ``messages`` (pulled by one intake) in one request."""
        if messages:
            messages[0].intake.settle(messages, ack=True)


class Intake:
    """Pulls the subscription in a thread, at most ``capacity`` messages held at a time, and
    keeps the held ones' leases alive until each is acknowledged (after its work is stored) or
    given back (deadline 0: Pub/Sub delivers it again at once).

    Long-polling pulls, not the client's streaming pull: a closed streaming pull stays open on
    the emulator, which then keeps handing it messages that nobody reads.
    """

    POLL_S = 5.0

    def __init__(self, subscriber, subscription: str, capacity: int, ack_deadline_s: int,
                 deliver: Callable[[Held], None]):
        self.subscriber = subscriber
        self.subscription = subscription
        self.capacity = capacity
        self.ack_deadline_s = ack_deadline_s
        self.deliver = deliver
        self.held: dict[str, Held] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._pull, name="media-stream-intake", daemon=True)
        self.thread.start()

    def _pull(self) -> None:
        extended = time.monotonic()
        while not self.stopping.is_set():
            if time.monotonic() - extended >= self.ack_deadline_s / 3:
                self._extend()
                extended = time.monotonic()
            with self.lock:
                free = self.capacity - len(self.held)
            if free <= 0:
                self.stopping.wait(0.05)
                continue
            try:
                response = self.subscriber.pull(
                    request={"subscription": self.subscription, "max_messages": free, "return_immediately": False},
                    timeout=self.POLL_S)
            except (GoogleAPICallError, RetryError):  # an empty long poll ends so; the emulator restarting too
                continue
            for received in response.received_messages:
                held = Held(received, self)
                with self.lock:
                    self.held[held.ack_id] = held
                if self.stopping.is_set():
                    held.nack()
                else:
                    self.deliver(held)

    def _extend(self) -> None:
        with self.lock:
            ack_ids = list(self.held)
        if ack_ids:
            self.subscriber.modify_ack_deadline(request={"subscription": self.subscription, "ack_ids": ack_ids,
                                                         "ack_deadline_seconds": self.ack_deadline_s})

    def settle(self, messages: Sequence[Held], ack: bool) -> None:
        """Acknowledge ``messages``, or give them back, in one request (those still held)."""
        with self.lock:
            ack_ids = [m.ack_id for m in messages if self.held.pop(m.ack_id, None) is not None]
        if not ack_ids:
            return
        if ack:
            self.subscriber.acknowledge(request={"subscription": self.subscription, "ack_ids": ack_ids})
        else:
            self.subscriber.modify_ack_deadline(request={"subscription": self.subscription, "ack_ids": ack_ids,
                                                         "ack_deadline_seconds": 0})

    def stop(self) -> None:
        """No more pulls; what a pull still brings back is given back."""
        self.stopping.set()
        self.thread.join(self.POLL_S + 5)


class _ThreadExecutor:
    """Events run in a thread of this run's process (no warm workers configured)."""

    def __init__(self, fn: ProcessEventFn):
        self.fn = fn
        self.fn.setup()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="media-stream")
        self.where = "this run's process"

    def submit(self, event: MediaEvent) -> Future:
        return self.pool.submit(self.fn.results_for, event)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class _DaskExecutor:
    """Events run on the warm workers of a ``dask.distributed`` cluster (``klio-dev``'s)."""

    def __init__(self, address: str, fn: ProcessEventFn, stream_key: str):
        from distributed import Client

        self.client = Client(address, timeout=30)
        self.pickled = cloudpickle.dumps(fn)
        self.stream_key = stream_key
        self.where = f"the warm workers at {address}"

    def submit(self, event: MediaEvent):
        return self.client.submit(stream_worker.results_for, self.stream_key, self.pickled, event, pure=False)

    def close(self) -> None:
        self.client.close()


def _executor(runner, fn: ProcessEventFn, stream_key: str) -> "_ThreadExecutor | _DaskExecutor":
    if runner.runner == "DaskRunner" and runner.dask is not None:
        return _DaskExecutor(runner.dask.client_address, fn, stream_key)
    return _ThreadExecutor(fn)


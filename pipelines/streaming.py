"""The media stream as a Beam streaming pipeline, for runners that own a Pub/Sub source (Dataflow):

    ReadFromPubSub(subscription) | DecodeEvents | Reshuffle | ProcessEventFn | EncodeResults
        | WriteToPubSub(results topic)          (bad events: WriteToPubSub(dead-letter topic))

The per-item step is the same ``ProcessEventFn`` (and so the same ``process_chain``) that the
local streaming driver runs on its warm workers and that backfills run per ID; only the source
differs. On Dataflow, ``ReadFromPubSub`` is the idiomatic source, and Dataflow acknowledges a
message once the bundle that read it is committed: its outputs and records are written and its
result message is published. The Dagster stream run then reports each result message to Dagster
and acknowledges it only after the events are stored (``klio_assets.framework.stream``).

Locally no streaming runner works offline with acknowledgement after the work (Beam's Python
DirectRunner acknowledges each Pub/Sub message when it pulls it, the FnApiRunner refuses
streaming, Prism needs a downloaded binary), so the local driver pulls Pub/Sub itself.
"""

import json
from collections.abc import Sequence
from collections.abc import Set as AbstractSet

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from klio_core.media_store import MediaStore
from klio_core.records import ItemResult
from klio_core.wire import BadEvent, MediaEvent, encode_event, parse_event
from pipelines.specs import ItemTask
from pipelines.transforms import ProcessEventFn

RESULT_VERSION = 1


def encode_result(event: MediaEvent, results: Sequence[ItemResult]) -> bytes:
    """One event's results as a result message (JSON, versioned)."""
    return json.dumps({"v": RESULT_VERSION, "event": encode_event(event, "json").decode(),
                       "results": [r.to_json() for r in results]}).encode()


def decode_result(data: bytes, known_assets: AbstractSet[str]) -> tuple[MediaEvent, list[ItemResult]]:
    body = json.loads(data)
    if body.get("v") != RESULT_VERSION:
        raise ValueError(f"result message format {body.get('v')!r}; this code reads {RESULT_VERSION}")
    event = parse_event(body["event"].encode(), known_assets)
    if isinstance(event, BadEvent):
        raise ValueError(f"result message names a bad event: {event.reason}")
    return event, [ItemResult.from_json(r) for r in body["results"]]


class DecodeEventFn(beam.DoFn):
    """Message bodies in; ``MediaEvent``s out, and ``(body, reason)`` on the ``bad`` output."""

    def __init__(self, known_assets: AbstractSet[str]):
        self.known_assets = frozenset(known_assets)

    def process(self, data: bytes):
        event = parse_event(data, self.known_assets)
        if isinstance(event, BadEvent):
            yield beam.pvalue.TaggedOutput("bad", beam.io.PubsubMessage(data, {"error": event.reason[:1024]}))
        else:
            yield event


def build_streaming_pipeline(tasks: Sequence[ItemTask], store: MediaStore, options: PipelineOptions, *,
                             subscription_path: str, results_topic_path: str,
                             dead_letter_topic_path: str | None = None) -> beam.Pipeline:
    """The streaming pipeline over ``tasks`` (upstream first). ``options`` must say ``--streaming``."""
    known = frozenset(o.asset for task in tasks for o in task.outputs)
    pipeline = beam.Pipeline(options=options)
    decoded = (pipeline
               | "ReadEvents" >> beam.io.ReadFromPubSub(subscription=subscription_path)
               | "DecodeEvents" >> beam.ParDo(DecodeEventFn(known)).with_outputs("bad", main="events"))
    (decoded.events
     | "Distribute" >> beam.Reshuffle()
     | "ProcessEvent" >> beam.ParDo(ProcessEventFn(tasks, store))
     | "EncodeResults" >> beam.MapTuple(encode_result)
     | "WriteResults" >> beam.io.WriteToPubSub(results_topic_path))
    if dead_letter_topic_path:
        decoded.bad | "DeadLetter" >> beam.io.WriteToPubSub(dead_letter_topic_path, with_attributes=True)
    return pipeline



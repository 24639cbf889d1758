"""Events on the wire, both ways: what an event asks for (``MediaEvent``), its encodings, and
decoding a message body back into an event or a ``BadEvent`` with the reason.

Accepted message bodies, tried in this order when decoding:

1. a KlioMessage protobuf (``klio_core/klio_message.proto``), v2 (``data.element``) or v1
   (``data.entity_id``), with ``metadata.force``, ``metadata.ping`` and
   ``metadata.intended_recipients`` (``anyone``, or ``limited`` to named assets);
2. JSON: ``{"element": "track-1", "force": false, "ping": false, "recipients": ["mfcc"]}``
   (only ``element`` is required);
3. a plain UTF-8 media ID, like Klio's non-KlioMessage input.

The asset layer publishes event output with ``encode_event``, the sensor decodes with
``parse_event``, and neither imports the other. Nothing here raises on bad input.
"""

import json
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from klio_core import klio_message_pb2 as pb
from klio_core.media_ids import InvalidMediaId, validate_media_id

FORMATS = ("klio", "json", "text")
JSON_ELEMENT, JSON_FORCE, JSON_PING, JSON_RECIPIENTS = "element", "force", "ping", "recipients"
"""The keys of a JSON event."""


@dataclass(frozen=True)
class MediaEvent:
    """What an event asks for. ``recipients`` is empty for top-down (every asset)."""

    media_id: str
    force: bool = False
    ping: bool = False
    recipients: tuple[str, ...] = ()


@dataclass(frozen=True)
class BadEvent:
    """A message body that asks for nothing this project can do, and why."""

    reason: str


def encode_event(event: MediaEvent, fmt: str = "klio") -> bytes:
    """The message body for ``event`` in ``fmt`` (klio: a v2 KlioMessage; json; text)."""
    if fmt == "klio":
        message = pb.KlioMessage(version=pb.V2)
        message.data.element = event.media_id.encode("utf-8")
        message.metadata.force = event.force
        message.metadata.ping = event.ping
        if event.recipients:
            for name in event.recipients:
                message.metadata.intended_recipients.limited.recipients.add(job_name=name)
        else:
            message.metadata.intended_recipients.anyone.SetInParent()
        return message.SerializeToString()
    if fmt == "json":
        return json.dumps({JSON_ELEMENT: event.media_id, JSON_FORCE: event.force, JSON_PING: event.ping,
                           JSON_RECIPIENTS: list(event.recipients)}).encode("utf-8")
    if fmt == "text":
        if event.force or event.ping or event.recipients:
            raise ValueError("the text format carries only a media ID: no force, ping or recipients")
        return event.media_id.encode("utf-8")
    raise ValueError(f"unknown event format {fmt!r}; choose one of {FORMATS}")


def parse_event(data: bytes, known_assets: AbstractSet[str]) -> MediaEvent | BadEvent:
    """Decode one message body; check the media ID and that every recipient is a known asset.
    A reason names the format the body was read as (KlioMessage, JSON or text)."""
    event, fmt = _decode(data)
    if isinstance(event, BadEvent):
        return event
    try:
        validate_media_id(event.media_id)
    except InvalidMediaId as e:
        return BadEvent(f"{e} (read as {fmt})")
    unknown = sorted(set(event.recipients) - set(known_assets))
    if unknown:
        return BadEvent(f"media ID {event.media_id!r}: unknown asset(s) in recipients: {unknown}; "
                        f"known: {sorted(known_assets)} (read as {fmt})")
    return event


def _decode(data: bytes) -> tuple[MediaEvent | BadEvent, str]:
    klio = _from_klio_message(data)
    if klio is not None:
        return klio, "KlioMessage"
    if data.lstrip()[:1] == b"{":
        return _from_json(data), "JSON"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return BadEvent(f"undecodable message: tried KlioMessage (no item), JSON (not an object) and UTF-8 "
                        f"text (invalid bytes): {data[:32]!r}..."), "text"
    return MediaEvent(text.strip()), "text"


def _from_klio_message(data: bytes) -> MediaEvent | BadEvent | None:
    """A MediaEvent if ``data`` is a KlioMessage naming an item; None if it is not a KlioMessage."""
    message = pb.KlioMessage()
    try:
        message.ParseFromString(data)
    except DecodeError:
        return None
    if not (message.HasField("data") and (message.data.element or message.data.entity_id)):
        # Some plain text parses as a message of unknown fields only; a KlioMessage has known ones.
        if message.HasField("metadata") or message.HasField("data") or message.version != pb.UNKNOWN:
            return BadEvent("empty media ID: the KlioMessage's data.element (and data.entity_id) is empty "
                            "(read as KlioMessage)")
        return None
    if message.version == pb.V1 or (message.version == pb.UNKNOWN and not message.data.element):
        media_id = message.data.entity_id
    else:
        try:
            media_id = message.data.element.decode("utf-8")
        except UnicodeDecodeError:
            return BadEvent(f"KlioMessage data.element is not UTF-8: {message.data.element[:32]!r}")
    recipients = message.metadata.intended_recipients
    limited = recipients.WhichOneof("recipients") == "limited"
    return MediaEvent(
        media_id=media_id.strip(),
        force=message.metadata.force,
        ping=message.metadata.ping,
        recipients=tuple(r.job_name for r in recipients.limited.recipients) if limited else (),
    )


def _from_json(data: bytes) -> MediaEvent | BadEvent:
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, ValueError) as e:
        return BadEvent(f"message looks like JSON but does not parse (read as JSON): {e}")
    if not isinstance(body, dict) or not isinstance(body.get(JSON_ELEMENT), str):
        return BadEvent(f"JSON event needs a string 'element' (the media ID): {str(body)[:80]}")
    recipients = body.get(JSON_RECIPIENTS) or []
    if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
        return BadEvent(f"JSON event 'recipients' must be a list of asset names: {recipients!r}")
    for flag in (JSON_FORCE, JSON_PING):
        if not isinstance(body.get(flag, False), bool):
            return BadEvent(f"JSON event '{flag}' must be true or false: {body[flag]!r}")
    return MediaEvent(body[JSON_ELEMENT].strip(), bool(body.get(JSON_FORCE, False)),
                      bool(body.get(JSON_PING, False)), tuple(recipients))

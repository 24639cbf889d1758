"""Events on the wire: what an event asks for, and its encodings (KlioMessage v2, JSON, text).

The bottom layer (``klio_core``): the asset layer publishes event output with it and the sensor
parses events with it, and neither imports the other.
"""

import json
from dataclasses import dataclass

from klio_core import klio_message_pb2 as pb

FORMATS = ("klio", "json", "text")


@dataclass(frozen=True)
class MediaEvent:
    """What an event asks for. ``recipients`` is empty for top-down (every asset)."""

    media_id: str
    force: bool = False
    ping: bool = False
    recipients: tuple[str, ...] = ()



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
        return json.dumps({"element": event.media_id, "force": event.force, "ping": event.ping,
                           "recipients": list(event.recipients)}).encode("utf-8")
    if fmt == "text":
        if event.force or event.ping or event.recipients:
            raise ValueError("the text format carries only a media ID: no force, ping or recipients")
        return event.media_id.encode("utf-8")
    raise ValueError(f"unknown event format {fmt!r}; choose one of {FORMATS}")

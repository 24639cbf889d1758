import json

import pytest

from klio_core.wire import BadEvent, MediaEvent, encode_event, parse_event

ASSETS = {"waveform", "mel_spectrogram", "mfcc"}


def varint_field(number: int, value: int) -> bytes:
    return bytes([number << 3 | 0, value])


def bytes_field(number: int, payload: bytes) -> bytes:
    return bytes([number << 3 | 2, len(payload)]) + payload


# KlioMessages written byte by byte from Klio's klio.proto field numbers (not by our own schema):
# KlioMessage{metadata=1, data=2, version=3}; Data{entity_id=1, payload=2, element=3};
# Metadata{force=4, ping=5, intended_recipients=6}; Recipients{anyone=1, limited=2};
# Limited{recipients=1 (KlioJob{job_name=1})}.
V2_TOP_DOWN = (bytes_field(1, bytes_field(6, bytes_field(1, b"")))
               + bytes_field(2, bytes_field(3, b"track-1")) + varint_field(3, 2))
V2_BOTTOM_UP_FORCED = (
    bytes_field(1, varint_field(4, 1) + bytes_field(6, bytes_field(2, bytes_field(1, bytes_field(1, b"mfcc")))))
    + bytes_field(2, bytes_field(3, b"track-2")) + varint_field(3, 2))
V1_PING = bytes_field(1, varint_field(5, 1)) + bytes_field(2, bytes_field(1, b"track-3")) + varint_field(3, 1)
V2_WITH_PAYLOAD_AND_AUDIT = (bytes_field(1, bytes_field(3, bytes_field(2, bytes_field(1, b"upstream-job"))))
                             + bytes_field(2, bytes_field(2, b"state") + bytes_field(3, b"track-4"))
                             + varint_field(3, 2))


@pytest.mark.parametrize(("data", "expected"), [
    (V2_TOP_DOWN, MediaEvent("track-1")),
    (V2_BOTTOM_UP_FORCED, MediaEvent("track-2", force=True, recipients=("mfcc",))),
    (V1_PING, MediaEvent("track-3", ping=True)),
    (V2_WITH_PAYLOAD_AND_AUDIT, MediaEvent("track-4")),
    (b'{"element": "track-5", "force": true, "recipients": ["mfcc", "waveform"]}',
     MediaEvent("track-5", force=True, recipients=("mfcc", "waveform"))),
    (b'  {"element": " track-6 ", "ping": true}', MediaEvent("track-6", ping=True)),
    (b"track-7", MediaEvent("track-7")),
    (b"track-8\n", MediaEvent("track-8")),
    (b"abcdefghij", MediaEvent("abcdefghij")),
    (b"spotify:track:4uLU6hMCjMI75M1A2tKUQC", MediaEvent("spotify:track:4uLU6hMCjMI75M1A2tKUQC")),
    ("label/2024/tr\u00e4ck 1".encode(), MediaEvent("label/2024/tr\u00e4ck 1")),
])
def test_accepted_formats(data, expected):
    assert parse_event(data, ASSETS) == expected


@pytest.mark.parametrize(("data", "reason"), [
    (b"\xff\xfe\x00garbage", "undecodable message"),
    (b"", "empty media ID"),
    (b"   ", "empty media ID"),
    (b"x" * 257, "257 characters"),
    (b"../../etc/passwd", "'..' path segment"),
    (b"a...b", "partition range"),
    (b'{"element": "track-10", "recipients": ["nope"]}', "unknown asset(s) in recipients: ['nope']"),
    (b'{"element": "track-11"', "does not parse"),
    (b'{"media": "track-12"}', "needs a string 'element'"),
    (b'{"element": "track-13", "recipients": "mfcc"}', "must be a list"),
    (b'{"element": "track-14", "force": "yes"}', "'force' must be true or false"),
    (bytes_field(2, bytes_field(3, b"\xff\xfe")) + varint_field(3, 2), "not UTF-8"),
    # An empty element, as Klio's own client can send it: metadata (anyone), data.element="", V2.
    (bytes_field(1, bytes_field(6, bytes_field(1, b""))) + bytes_field(2, b"") + varint_field(3, 2),
     "empty media ID: the KlioMessage's data.element (and data.entity_id) is empty (read as KlioMessage)"),
    (bytes_field(1, varint_field(4, 1)) + varint_field(3, 2), "empty media ID"),
    (b"a//b", "(read as text)"),
    (b'{"element": "../x"}', "path segment ('/' separates folders) (read as JSON)"),
])
def test_bad_events_carry_a_reason(data, reason):
    event = parse_event(data, ASSETS)
    assert isinstance(event, BadEvent)
    assert reason in event.reason


@pytest.mark.parametrize("fmt", ["klio", "json"])
@pytest.mark.parametrize("event", [
    MediaEvent("track-1"),
    MediaEvent("track-2", force=True, ping=True, recipients=("mfcc", "waveform")),
])
def test_encoded_events_decode_to_themselves(fmt, event):
    assert parse_event(encode_event(event, fmt), ASSETS) == event


def test_encodings_match_the_klio_wire_format_and_json_shape():
    assert encode_event(MediaEvent("track-1"), "klio") == V2_TOP_DOWN
    assert json.loads(encode_event(MediaEvent("t", recipients=("mfcc",)), "json")) == {
        "element": "t", "force": False, "ping": False, "recipients": ["mfcc"]}
    assert encode_event(MediaEvent("t"), "text") == b"t"
    with pytest.raises(ValueError, match="only a media ID"):
        encode_event(MediaEvent("t", force=True), "text")
    with pytest.raises(ValueError, match="unknown event format"):
        encode_event(MediaEvent("t"), "xml")

"""What a media ID may be, and the one rule that turns it into a storage path. No Dagster here:
the sensor, the stores and the Beam workers all use it.

A media ID is what the user's catalogue already calls an item: a Spotify URI
(``spotify:track:4uLU6hMCjMI75M1A2tKUQC``), an ISRC with a prefix, a catalogue path
(``label/2024/track-01``). Accepted: 1 to 256 characters of printable Unicode (no control
characters, no leading or trailing space); ``/`` separates folders, and no ``/``-separated segment
may be empty, ``.`` or ``..``; no ``...`` (Dagster's partition-range syntax).

Source media are looked up under the ID itself, as Klio's data input does:
``<source_location>/<media_id><suffix>``, a ``/`` naming a nested folder or object.

Outputs are stored under ``storage_name(media_id)``, one reversible, collision-free rule: each
segment keeps ASCII lowercase letters, digits, ``-``, ``_`` and ``.`` (but not a leading ``.``),
and every other byte of its UTF-8 becomes ``%XX`` (upper-case hex), capital letters included. So
``spotify:track:x`` is stored as ``spotify%3Atrack%3Ax``, ``Track-1`` as ``%54rack-1``, and
``label/2024/track-01`` in the folder ``label/2024``. Two different IDs never share a name, not
even on a case-insensitive file system, and no name is hidden, ``.`` or ``..``, so nothing lands
outside the asset's folder. IDs of lowercase letters, digits, ``.``, ``_`` and ``-`` (every ID the
first rule allowed, but those with capitals) keep the path they had.
"""

import string

PARTITIONS_NAME = "media_ids"
"""The Dagster dynamic partitions that hold the media IDs (``klio_assets.framework.partitions``)."""
MAX_MEDIA_ID_LENGTH = 256
MAX_STORED_SEGMENT = 200  # bytes of one escaped segment: 255 per name, less suffixes and temporary names
_KEPT = frozenset(string.ascii_lowercase + string.digits + "-_.")


class InvalidMediaId(ValueError):
    """A media ID that cannot name a partition or a storage object; the message says why."""


def validate_media_id(media_id: object) -> str:
    """Return ``media_id`` if it follows the rule above; otherwise raise ``InvalidMediaId``."""
    if not isinstance(media_id, str):
        raise InvalidMediaId(f"media ID {media_id!r} is not a string")
    if not media_id:
        raise InvalidMediaId("empty media ID")
    shown = f"{media_id[:60]!r}{'...' if len(media_id) > 60 else ''}"
    if len(media_id) > MAX_MEDIA_ID_LENGTH:
        raise InvalidMediaId(f"media ID {shown} is {len(media_id)} characters long (at most {MAX_MEDIA_ID_LENGTH})")
    if not media_id.isprintable():
        raise InvalidMediaId(f"media ID {shown} holds control or other non-printable characters")
    if media_id != media_id.strip():
        raise InvalidMediaId(f"media ID {shown} starts or ends with white space")
    if "..." in media_id:
        raise InvalidMediaId(f"media ID {shown} contains '...', which Dagster reads as a partition range")
    for segment in media_id.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidMediaId(f"media ID {shown} has an empty, '.' or '..' path segment "
                                 "('/' separates folders)")
        if len(_escape(segment)) > MAX_STORED_SEGMENT:
            raise InvalidMediaId(f"media ID {shown}: the segment {segment[:40]!r}... is too long to store "
                                 f"(more than {MAX_STORED_SEGMENT} bytes once escaped)")
    return media_id


def storage_name(media_id: str) -> str:
    """The relative path (without suffix) under which ``media_id``'s outputs are stored. The ID
    must be valid already: it is checked once, where it enters (an event, a registration, a
    worker's pass), not on every path derived from it."""
    return "/".join(_escape(segment) for segment in media_id.split("/"))


def media_id_from_storage_name(name: str) -> str:
    """The inverse of ``storage_name``."""
    return "/".join(_unescape(segment) for segment in name.split("/"))


def _escape(segment: str) -> str:
    out = []
    for i, char in enumerate(segment):
        if char in _KEPT and not (i == 0 and char == "."):
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out)


def _unescape(segment: str) -> str:
    raw, i = bytearray(), 0
    while i < len(segment):
        if segment[i] == "%":
            raw.append(int(segment[i + 1:i + 3], 16))
            i += 3
        else:
            raw.extend(segment[i].encode("ascii"))
            i += 1
    return raw.decode("utf-8")

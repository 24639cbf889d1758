"""The one partitions definition every media asset shares, and the rule for what a media ID may be."""

import re

import dagster as dg

media_ids = dg.DynamicPartitionsDefinition(name="media_ids")

MAX_MEDIA_ID_LENGTH = 128
_MEDIA_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class InvalidMediaId(ValueError):
    """A media ID that cannot name a partition or a storage object."""


def validate_media_id(media_id: object) -> str:
    """Return ``media_id`` if it is safe as a partition key and as one storage path segment.

    Allowed: 1-128 characters of ASCII letters, digits, ``.``, ``_`` and ``-``, starting with a
    letter or digit (so ``.``, ``..`` and hidden names are impossible). Anything else raises
    ``InvalidMediaId`` naming the ID and the reason.
    """
    if not isinstance(media_id, str):
        raise InvalidMediaId(f"media ID {media_id!r} is not a string")
    if not media_id:
        raise InvalidMediaId("media ID is empty")
    if len(media_id) > MAX_MEDIA_ID_LENGTH:
        raise InvalidMediaId(
            f"media ID {media_id[:40]!r}... is {len(media_id)} characters long "
            f"(at most {MAX_MEDIA_ID_LENGTH})"
        )
    if not _MEDIA_ID_PATTERN.fullmatch(media_id):
        raise InvalidMediaId(
            f"media ID {media_id!r} has characters unsafe for storage paths "
            "(allowed: letters, digits, '.', '_', '-'; must start with a letter or digit)"
        )
    return media_id

"""Run tags that change what a media-asset run does (set them in the UI's launchpad, or the sensor does).

- ``klio/force=true``: recompute outputs that already exist (by default they are skipped).
- ``klio/ping=true``: process nothing; record that the run reached each selected asset and ID.
"""

from collections.abc import Mapping

FORCE_TAG = "klio/force"
PING_TAG = "klio/ping"


def tag_is_true(tags: Mapping[str, str], tag: str) -> bool:
    return str(tags.get(tag, "")).lower() in ("true", "1", "yes")

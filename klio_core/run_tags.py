"""Run tags that change what a media-asset run does (set them in the UI's launchpad, or the sensor does).

- ``klio/force=true``: recompute outputs that already exist (by default they are skipped).
- ``klio/ping=true``: process nothing; record that the run reached each selected asset and ID.
- ``klio/upstream_not_made=<reason>``: set by the sensor of a code location built on another's
  outputs, when that location did not make an input the run's media IDs wait for: compute
  nothing, and drop each selected asset's media IDs with this reason (``sensors.upstream_requests``).
"""

from collections.abc import Mapping

FORCE_TAG = "klio/force"
PING_TAG = "klio/ping"
UPSTREAM_NOT_MADE_TAG = "klio/upstream_not_made"


def tag_is_true(tags: Mapping[str, str], tag: str) -> bool:
    return str(tags.get(tag, "")).lower() in ("true", "1", "yes")

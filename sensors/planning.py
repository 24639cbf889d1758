"""From decoded events to new partitions and run requests. Pure functions: no Pub/Sub, no instance.

Events that ask for the same thing (same assets, force, ping) are batched. Each batch is cut
into ranges that are contiguous in ``media_ids`` order (a run targets a partition range) and
at most ``max_ids_per_run`` long. New IDs are appended batch by batch, so a batch's new IDs are
always one contiguous range.
"""

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dagster as dg

from klio_core.run_tags import FORCE_TAG, PING_TAG, UPSTREAM_NOT_MADE_TAG
from klio_core.wire import MediaEvent
from pipelines.graph import selected_assets
from resources.dagster_tags import partition_range_tags


@dataclass(frozen=True)
class Received:
    """A decoded event and the key of the Pub/Sub message it came in (``pubsub_sensor.message_key``)."""

    message_key: str
    event: MediaEvent
    announced: str | None = None
    """The output of another code location that the message announces (its ``asset`` attribute)."""
    not_made: str = ""
    """Why its media ID is dropped without being run: an input that another code location did not
    make (``sensors.upstream_requests``)."""


@dataclass(frozen=True)
class RunPlan:
    media_ids: tuple[str, ...]
    assets: tuple[str, ...]
    force: bool
    ping: bool
    message_keys: tuple[str, ...]
    not_made: str = ""

    @property
    def run_key(self) -> str:
        """Stable for the same messages and the same work, so a redelivered batch is not run twice."""
        body = json.dumps([self.media_ids, self.assets, self.force, self.ping, sorted(self.message_keys),
                           *([self.not_made] if self.not_made else [])])
        return "pubsub-" + hashlib.sha256(body.encode()).hexdigest()[:32]

    def run_request(self) -> dg.RunRequest:
        tags = partition_range_tags(self.media_ids[0], self.media_ids[-1])
        if self.force:
            tags[FORCE_TAG] = "true"
        if self.ping:
            tags[PING_TAG] = "true"
        if self.not_made:
            tags[UPSTREAM_NOT_MADE_TAG] = self.not_made
        # A ping checks nothing: with no check in the run, the Checks tab keeps each check's last
        # real evaluation instead of a "Skipped" one from a run that wrote no output.
        return dg.RunRequest(run_key=self.run_key, asset_selection=[dg.AssetKey(a) for a in self.assets],
                             asset_check_keys=[] if self.ping else None, tags=tags)


def selection_for(item: Received, upstream: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """The assets of ``item``'s run (``pipelines.graph.selected_assets``)."""
    return tuple(sorted(selected_assets(upstream, item.event.recipients, item.announced)))


def plan_runs(received: Sequence[Received], registered: Sequence[str],
              upstream: Mapping[str, Sequence[str]], max_ids_per_run: int,
              whole_catalogue: bool = True) -> tuple[list[str], list[RunPlan]]:
    """The IDs to add to ``media_ids`` (in order) and the runs to request.

    ``registered`` is the current ``media_ids`` in their order (``whole_catalogue``), or only
    the received IDs already in it: then none of them is taken to be next to another, and each
    goes into a run of its own (``sensors.pubsub_sensor`` looks the catalogue up so only when
    at most one is registered). ``upstream`` maps each media asset to its upstream asset names.
    """
    batches: dict[tuple, dict[str, list[str]]] = {}
    for item in received:
        key = (selection_for(item, upstream), item.event.force, item.event.ping, item.not_made)
        if not key[0]:  # it announces an output none of these assets reads: nothing to do
            continue
        batches.setdefault(key, {}).setdefault(item.event.media_id, []).append(item.message_key)

    known = set(registered)
    new_ids: list[str] = []
    for ids in batches.values():
        for media_id in ids:
            if media_id not in known:
                known.add(media_id)
                new_ids.append(media_id)
    spacing = 1 if whole_catalogue else 2  # a gap between each two registered IDs, and before the new ones
    position = {media_id: spacing * i for i, media_id in enumerate(registered)}
    position.update({media_id: spacing * len(registered) + i for i, media_id in enumerate(new_ids)})

    plans = []
    for (assets, force, ping, not_made), ids in batches.items():
        for chunk in _contiguous_chunks(sorted(ids, key=position.__getitem__), position, max_ids_per_run):
            message_keys = tuple(m for media_id in chunk for m in ids[media_id])
            plans.append(RunPlan(tuple(chunk), assets, force, ping, message_keys, not_made))
    return new_ids, plans


def _contiguous_chunks(ordered: list[str], position: Mapping[str, int], limit: int) -> list[list[str]]:
    chunks: list[list[str]] = []
    for media_id in ordered:
        last = chunks[-1] if chunks else None
        if last and len(last) < limit and position[media_id] == position[last[-1]] + 1:
            last.append(media_id)
        else:
            chunks.append([media_id])
    return chunks

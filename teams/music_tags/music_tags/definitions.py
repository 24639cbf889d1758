"""The music tags team's code location: ``workspace.yaml`` loads it beside the media team's.

Its events are the media team's event output (each announces a ``waveform`` or ``note_events``
of one media ID, and runs the tags that read it); its Pub/Sub subscription, event output, dead
letters, retries, jobs and sensors are its own, named ``music_tags-...`` and ``music_tags_...``.
"""

from klio_assets import code_location
from music_tags.assets import TAGS_ASSETS

defs = code_location(TAGS_ASSETS, name="music_tags", events_from="klio_assets",
                     from_other_locations=["waveform", "note_events"])

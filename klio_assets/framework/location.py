"""A team's code location in one call: its media assets, their job, the Pub/Sub sensor that turns
its events into runs, the media stream and its keeper (with ``KLIO_STREAMING``), and the
resources, as one ``Definitions``; this project's own location also holds the instance's
history retention (``jobs.retention``).

This project's own location (``klio_assets.definitions``) is one; a second team's is another,
in its own package, built the same way on top of this one's outputs::

    defs = code_location(TAGS_ASSETS, name="music_tags", events_from="klio_assets",
                         from_other_locations=["waveform", "note_events"])

Its events are the event output of the location it names in ``events_from`` (each message
announces one output of one media ID, and runs the assets here that read it); its
subscription, event output, dead letters and retries are its own (``Settings.for_location``).
"""

import dataclasses
from collections.abc import Collection, Sequence

import dagster as dg

from jobs import build_media_job
from jobs.retention import build_retention_schedule, history_retention_job
from klio_assets.framework.assets import build_media_assets
from klio_assets.framework.media_asset import MediaAsset
from klio_assets.framework.stream import STREAM_JOB, build_media_stream_job
from klio_assets.settings import Settings
from pipelines.graph import asset_graph, in_dependency_order
from sensors.pubsub_sensor import WAIT_FOR_EVENTS_S, build_pubsub_sensor
from sensors.stream_sensor import build_stream_sensor

MAIN_LOCATION = "klio_assets"
"""The name of this project's own code location, whose names (topics, jobs, sensors) are the
unprefixed defaults."""
STREAM_RETRY_INTERVAL_S = 30
"""With the stream on, how often the Pub/Sub sensor looks for the IDs it failed or dropped."""


def code_location(
    media_assets: Sequence[MediaAsset],
    *,
    name: str = MAIN_LOCATION,
    events_from: str | None = None,
    announces: Collection[str] = (),
    from_other_locations: Collection[str] = (),
    settings: Settings | None = None,
) -> dg.Definitions:
    """The ``Definitions`` of one code location.

    Args:
        media_assets: its ``@media_asset`` functions.
        name: the location's name, as ``workspace.yaml`` gives it; another team's location has
            its own Pub/Sub names, jobs and sensors, prefixed with it.
        events_from: the code location whose event output this one's events are; default: the
            settings' input topic (new content, ``klio-publish``).
        announces: assets whose outputs it announces on its event output (Klio's event output),
            for code locations downstream; only when Pub/Sub is configured.
        from_other_locations: upstream assets that another code location makes.
        settings: default ``Settings.from_env()``.
    """
    settings = settings or Settings.from_env()
    if name != MAIN_LOCATION:
        # it asks this project's location for missing inputs on its input topic (bottom-up across
        # the boundary); a location downstream of another team's has no such topic yet
        settings = settings.for_location(name, event_output_of(events_from, settings) if events_from
                                         else settings.pubsub_topic,
                                         upstream_topic=settings.pubsub_topic if events_from == MAIN_LOCATION else None)
    elif events_from:
        settings = settings.model_copy(update={"pubsub_topic": event_output_of(events_from, settings)})
    media_assets = _announcing(media_assets, announces if settings.pubsub_configured else ())
    prefix = "" if name == MAIN_LOCATION else f"{name}_"
    retains = name == MAIN_LOCATION and settings.retention_days > 0  # instance-wide: one location prunes
    graph = asset_graph(media_assets)
    pubsub = settings.pubsub()
    sensor_status = dg.DefaultSensorStatus.RUNNING if settings.pubsub_configured else dg.DefaultSensorStatus.STOPPED
    # With KLIO_STREAMING, new content goes through one long-running stream run, and the Pub/Sub
    # sensor takes only the IDs the stream failed or dropped, as ordinary batch runs.
    stream_job = build_media_stream_job(in_dependency_order(media_assets), retry_topic=pubsub.retry_topic,
                                        name=prefix + STREAM_JOB)
    return dg.Definitions(
        assets=[build_media_assets(media_assets, max_ids_per_run=settings.max_ids_per_run,
                                   from_other_locations=from_other_locations)],
        jobs=[build_media_job(graph, name=prefix + "media_job"), *([stream_job] if settings.streaming else []),
              *([history_retention_job] if retains else [])],
        schedules=[build_retention_schedule(settings.retention_days)] if retains else [],
        sensors=[build_pubsub_sensor(
            graph, max_ids_per_run=settings.max_ids_per_run, hold_while_queued=settings.sensor_hold_while_queued,
            default_status=sensor_status, name=prefix + "pubsub_media_events",
            # the stream's retries need no second's latency: no listening for them between ticks,
            # and a tick every STREAM_RETRY_INTERVAL_S (every tick costs the code server and the
            # daemon CPU, which an idle stack pays: docs/BENCHMARKS.md)
            wait_for_events_s=0.0 if settings.streaming else WAIT_FOR_EVENTS_S,
            minimum_interval_seconds=STREAM_RETRY_INTERVAL_S if settings.streaming else 1,
            # with the stream on, the stream asks (and the sensor takes only its retries)
            asks_upstream=bool(pubsub.upstream_topic and from_other_locations) and not settings.streaming,
        ), *([build_stream_sensor(stream_job, rotate_after_s=settings.stream_rotate_after_s,
                                  default_status=sensor_status, name=prefix + "media_stream_keeper")]
             if settings.streaming else [])],
        resources={"media_storage": settings.media_storage(), "beam_runner": settings.beam_runner, "pubsub": pubsub},
        # Media assets run as one step that hands the work to Beam; running it in the run's own
        # process saves a second Python start-up and import of librosa and Beam per run.
        executor=dg.in_process_executor,
    )


def event_output_of(location: str, settings: Settings) -> str:
    """The topic of ``location``'s event output: this project's (``KLIO_PUBSUB_OUTPUT_TOPIC``),
    or another team's (``<location>-outputs``, ``Settings.for_location``)."""
    return settings.pubsub_output_topic if location == MAIN_LOCATION else f"{location}-outputs"


def _announcing(media_assets: Sequence[MediaAsset], announces: Collection[str]) -> list[MediaAsset]:
    unknown = set(announces) - {o.asset for media in media_assets for o in media.outputs}
    if unknown:
        raise ValueError(f"announces names no media asset of this code location: {sorted(unknown)}")
    return [dataclasses.replace(media, event_output=media.event_output or "klio")
            if any(o.asset in announces for o in media.outputs) else media for media in media_assets]

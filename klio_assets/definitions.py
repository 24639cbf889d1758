"""The code location: the single ``Definitions`` that ``workspace.yaml`` and ``dagster dev`` load.

Its settings (storage root, Pub/Sub names, Beam runner, the cap on IDs per run) come from the
environment through ``klio_assets.settings.Settings``, which lists every variable.
"""

import dagster as dg

from jobs import build_media_job
from klio_assets import build_media_assets
from klio_assets.builtin import BUILTIN_ASSETS
from klio_assets.framework.stream import build_media_stream_job
from klio_assets.settings import Settings
from pipelines.graph import asset_graph, in_dependency_order
from sensors.pubsub_sensor import WAIT_FOR_EVENTS_S, build_pubsub_sensor
from sensors.stream_sensor import build_stream_sensor

SETTINGS = Settings.from_env()
MEDIA_ASSETS = BUILTIN_ASSETS
MEDIA_GRAPH = asset_graph(MEDIA_ASSETS)  # its keys: "every media asset", for the job and events
MEDIA_STORAGE = SETTINGS.media_storage()
PUBSUB = SETTINGS.pubsub()
SENSOR_STATUS = dg.DefaultSensorStatus.RUNNING if SETTINGS.pubsub_configured else dg.DefaultSensorStatus.STOPPED
# With KLIO_STREAMING, new content goes through one long-running stream run, and the Pub/Sub
# sensor takes only the IDs the stream failed or dropped, as ordinary batch runs.
STREAM_JOB = build_media_stream_job(in_dependency_order(MEDIA_ASSETS), retry_topic=PUBSUB.retry_topic)

defs = dg.Definitions(
    assets=[build_media_assets(MEDIA_ASSETS, max_ids_per_run=SETTINGS.max_ids_per_run)],
    jobs=[build_media_job(MEDIA_GRAPH), *([STREAM_JOB] if SETTINGS.streaming else [])],
    sensors=[build_pubsub_sensor(
        MEDIA_GRAPH, max_ids_per_run=SETTINGS.max_ids_per_run, hold_while_queued=SETTINGS.sensor_hold_while_queued,
        default_status=SENSOR_STATUS,
        # the stream's retries need no second's latency: no listening for them between ticks
        wait_for_events_s=0.0 if SETTINGS.streaming else WAIT_FOR_EVENTS_S,
        minimum_interval_seconds=5 if SETTINGS.streaming else 1,
    ), *([build_stream_sensor(STREAM_JOB, rotate_after_s=SETTINGS.stream_rotate_after_s,
                              default_status=SENSOR_STATUS)] if SETTINGS.streaming else [])],
    resources={"media_storage": MEDIA_STORAGE, "beam_runner": SETTINGS.beam_runner, "pubsub": PUBSUB},
    # Media assets run as one step that hands the work to Beam; running it in the run's own
    # process saves a second Python start-up and import of librosa and Beam per run.
    executor=dg.in_process_executor,
)

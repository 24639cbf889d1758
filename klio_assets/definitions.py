"""The code location: the single ``Definitions`` that ``workspace.yaml`` and ``dagster dev`` load.

Settings arrive from the environment here and nowhere else:

- ``KLIO_DATA_ROOT``: the storage root (default ``./data``); sources in ``<root>/sources``.
  A ``gs://bucket/path`` root selects Google Cloud Storage, with the same layout.
- ``KLIO_MEDIA_URL``: the base URL under which a web server serves the storage root, so that
  the UI shows plots from media storage (``klio-dev`` sets it); on GCS the default opens objects
  with the viewer's Google login.
- ``KLIO_SOURCE_SUFFIXES``: the source file suffixes tried in order, comma-separated (default:
  every format the decoder reads, ``resources.media_store.DEFAULT_SOURCE_SUFFIXES``).
- ``KLIO_BEAM_RUNNER`` (DirectRunner, DataflowRunner, DaskRunner), ``KLIO_BEAM_ARGS``,
  ``KLIO_DATAFLOW_*`` and ``KLIO_DASK_*``: where the Beam pipelines run (see ``resources.beam``).
- ``KLIO_MAX_IDS_PER_RUN``: the most media IDs a backfill or sensor run takes (default 500).
- ``KLIO_PUBSUB_PROJECT``, ``KLIO_PUBSUB_TOPIC``, ``KLIO_PUBSUB_SUBSCRIPTION``,
  ``KLIO_PUBSUB_DEAD_LETTER_TOPIC``, ``KLIO_PUBSUB_OUTPUT_TOPIC``: where events come from and go
  to (see ``resources.pubsub``); ``KLIO_PUBSUB_ACK_DEADLINE_S``: the subscription's ack
  deadline (default 60). The sensor runs by default when a project is set or
  ``PUBSUB_EMULATOR_HOST`` points at an emulator.
"""

import os

import dagster as dg

from jobs import build_media_job
from klio_assets.audio import AUDIO_ASSETS
from klio_assets.media_asset import DEFAULT_MAX_IDS_PER_RUN, build_media_assets, media_asset_graph
from klio_assets.transcription import TRANSCRIPTION_ASSETS
from klio_assets.vocal_separation import VOCAL_SEPARATION_ASSETS
from resources.beam import beam_runner_from_env
from resources.media_store import source_suffixes_from_env
from resources.pubsub import PubSubResource
from resources.storage import GCSMediaStorage, LocalMediaStorage
from sensors.pubsub_sensor import build_pubsub_sensor

MAX_IDS_PER_RUN = int(os.environ.get("KLIO_MAX_IDS_PER_RUN", DEFAULT_MAX_IDS_PER_RUN))
MEDIA_ASSETS = AUDIO_ASSETS + VOCAL_SEPARATION_ASSETS + TRANSCRIPTION_ASSETS
MEDIA_GRAPH = media_asset_graph(MEDIA_ASSETS)  # its keys: "every media asset", for the job and events
DATA_ROOT = os.environ.get("KLIO_DATA_ROOT", "data")
SOURCE_SUFFIXES = source_suffixes_from_env()
MEDIA_URL = os.environ.get("KLIO_MEDIA_URL")
PUBSUB_CONFIGURED = bool(os.environ.get("KLIO_PUBSUB_PROJECT") or os.environ.get("PUBSUB_EMULATOR_HOST"))

MEDIA_STORAGE = (
    GCSMediaStorage(root=DATA_ROOT, source_suffixes=SOURCE_SUFFIXES, **({"media_url": MEDIA_URL} if MEDIA_URL else {}))
    if DATA_ROOT.startswith("gs://")
    else LocalMediaStorage(root=os.path.abspath(DATA_ROOT), source_suffixes=SOURCE_SUFFIXES, media_url=MEDIA_URL))
PUBSUB = PubSubResource(
    project=os.environ.get("KLIO_PUBSUB_PROJECT", "klio-dev"),
    topic=os.environ.get("KLIO_PUBSUB_TOPIC", "klio-media-events"),
    subscription=os.environ.get("KLIO_PUBSUB_SUBSCRIPTION", "klio-media-events-dagster"),
    dead_letter_topic=os.environ.get("KLIO_PUBSUB_DEAD_LETTER_TOPIC", "klio-media-events-dead-letter"),
    output_topic=os.environ.get("KLIO_PUBSUB_OUTPUT_TOPIC", "klio-media-outputs"),
    ack_deadline_seconds=int(os.environ.get("KLIO_PUBSUB_ACK_DEADLINE_S", "60")),
)

defs = dg.Definitions(
    assets=[build_media_assets(MEDIA_ASSETS, max_ids_per_run=MAX_IDS_PER_RUN)],
    jobs=[build_media_job(MEDIA_GRAPH)],
    sensors=[build_pubsub_sensor(
        MEDIA_GRAPH, max_ids_per_run=MAX_IDS_PER_RUN,
        default_status=dg.DefaultSensorStatus.RUNNING if PUBSUB_CONFIGURED else dg.DefaultSensorStatus.STOPPED,
    )],
    resources={"media_storage": MEDIA_STORAGE, "beam_runner": beam_runner_from_env(), "pubsub": PUBSUB},
    # Media assets run as one step that hands the work to Beam; running it in the run's own
    # process saves a second Python start-up and import of librosa and Beam per run.
    executor=dg.in_process_executor,
)

"""Every setting of the project, read from the environment in one place.

``Settings.from_env()`` is what the code location (``definitions.py``), the CLIs and the dev
stack use; no other module reads a ``KLIO_*`` variable. A malformed value fails at once, naming
the variable.

| variable | field | default |
| --- | --- | --- |
| ``KLIO_DATA_ROOT`` | ``data_root``: the storage root; sources in ``<root>/sources``; ``gs://bucket/path`` selects GCS | ``data`` |
| ``KLIO_MEDIA_URL`` | ``media_url``: the base URL under which a web server serves the storage root (``klio-dev`` sets it) | none (on GCS: ``storage.cloud.google.com``) |
| ``KLIO_SOURCE_SUFFIXES`` | ``source_suffixes``: tried in order, comma-separated | every format the decoder reads |
| ``KLIO_MAX_IDS_PER_RUN`` | ``max_ids_per_run``: the most media IDs a backfill or sensor run takes | 500 |
| ``KLIO_PUBSUB_PROJECT`` | ``pubsub_project``: a real Google Cloud project; without it, the local emulator's ``klio-dev`` | none |
| ``KLIO_PUBSUB_TOPIC``, ``_SUBSCRIPTION``, ``_DEAD_LETTER_TOPIC``, ``_OUTPUT_TOPIC`` | where events come from and go to | ``klio-media-events``, ``klio-media-events-dagster``, ``klio-media-events-dead-letter``, ``klio-media-outputs`` |
| ``KLIO_PUBSUB_ACK_DEADLINE_S`` | ``pubsub_ack_deadline_s``: the subscription's ack deadline | 60 |
| ``PUBSUB_EMULATOR_HOST`` | ``pubsub_emulator_host``: Google's variable for an emulator | none |
| ``KLIO_PUBSUB_EMULATOR_PORT`` | ``pubsub_emulator_port``: where ``klio-dev`` starts the emulator | 8085 |
| ``KLIO_MEDIA_PORT`` | ``media_port``: where ``klio-dev`` serves the data folder | 3001 |
| ``KLIO_DEMO_COUNT`` | ``demo_count``: clips in ``klio-dev``'s demo catalogue | 12 |
| ``KLIO_DEV_WORKERS`` | ``dev_workers``: warm Beam worker processes ``klio-dev`` starts for the code location's runs (``klio_dev.local_workers``) when no runner is configured; 0: each run computes in its own process (DirectRunner) | one per core |
| ``KLIO_SENSOR_HOLD_WHILE_QUEUED`` | ``sensor_hold_while_queued``: new events wait in Pub/Sub while a sensor run waits in the run queue, so runs grow under load (``sensors.pubsub_sensor``) | true |
| ``KLIO_STREAMING`` | ``streaming``: new content goes through one long-running stream run (``klio_assets.framework.stream``), kept going by the ``media_stream_keeper`` sensor; the Pub/Sub sensor then takes only the stream's retries (``KLIO_PUBSUB_RETRY_TOPIC``, ``_RETRY_SUBSCRIPTION``; default ``klio-media-events-retry``, ``klio-media-events-retry-dagster``) as batch runs | false |
| ``KLIO_STREAM_ROTATE_AFTER_S`` | ``stream_rotate_after_s``: a stream run's successor starts after this long (0: never) | 3600 |
| ``KLIO_RETENTION_DAYS`` | ``retention_days``: the daily ``history_retention`` prunes runs finished longer ago than this to their latest records (``resources.retention``); 0: no schedule | 30 |
| ``KLIO_WORKSPACE`` | ``workspace``: the workspace file ``klio-dev`` gives ``dagster dev`` (its code locations) | the repository's ``workspace.yaml``: this project's and ``teams/music_tags`` |
| ``KLIO_BEAM_RUNNER``, ``KLIO_BEAM_ARGS``, ``KLIO_DATAFLOW_*``, ``KLIO_DASK_*`` | ``beam_runner``: see ``resources.beam.beam_runner_from`` | the DirectRunner |

The sensor runs by default when a project is set or ``PUBSUB_EMULATOR_HOST`` names an emulator.
"""

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from klio_assets.framework.media_asset import DEFAULT_MAX_IDS_PER_RUN
from klio_core.media_store import DEFAULT_SOURCE_SUFFIXES, parse_suffixes
from klio_core.stack_file import DEFAULT_EMULATOR_PORT, DEV_PROJECT
from resources.beam import BeamRunner, beam_runner_from
from resources.pubsub import PubSubResource
from resources.storage import GCSMediaStorage, LocalMediaStorage

_PUBSUB_DEFAULTS = PubSubResource.model_fields  # the input topic, subscription and ack deadline are the resource's

_VARIABLES = {  # field -> environment variable
    "data_root": "KLIO_DATA_ROOT",
    "media_url": "KLIO_MEDIA_URL",
    "source_suffixes": "KLIO_SOURCE_SUFFIXES",
    "max_ids_per_run": "KLIO_MAX_IDS_PER_RUN",
    "pubsub_project": "KLIO_PUBSUB_PROJECT",
    "pubsub_topic": "KLIO_PUBSUB_TOPIC",
    "pubsub_subscription": "KLIO_PUBSUB_SUBSCRIPTION",
    "pubsub_dead_letter_topic": "KLIO_PUBSUB_DEAD_LETTER_TOPIC",
    "pubsub_output_topic": "KLIO_PUBSUB_OUTPUT_TOPIC",
    "pubsub_ack_deadline_s": "KLIO_PUBSUB_ACK_DEADLINE_S",
    "pubsub_emulator_host": "PUBSUB_EMULATOR_HOST",
    "pubsub_emulator_port": "KLIO_PUBSUB_EMULATOR_PORT",
    "media_port": "KLIO_MEDIA_PORT",
    "demo_count": "KLIO_DEMO_COUNT",
    "dev_workers": "KLIO_DEV_WORKERS",
    "sensor_hold_while_queued": "KLIO_SENSOR_HOLD_WHILE_QUEUED",
    "streaming": "KLIO_STREAMING",
    "pubsub_retry_topic": "KLIO_PUBSUB_RETRY_TOPIC",
    "pubsub_retry_subscription": "KLIO_PUBSUB_RETRY_SUBSCRIPTION",
    "stream_rotate_after_s": "KLIO_STREAM_ROTATE_AFTER_S",
    "workspace": "KLIO_WORKSPACE",
    "retention_days": "KLIO_RETENTION_DAYS",
}


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    data_root: str = "data"
    media_url: str | None = None
    source_suffixes: tuple[str, ...] = tuple(DEFAULT_SOURCE_SUFFIXES)
    max_ids_per_run: int = Field(default=DEFAULT_MAX_IDS_PER_RUN, gt=0)
    pubsub_project: str | None = None
    pubsub_topic: str = _PUBSUB_DEFAULTS["topic"].default
    pubsub_subscription: str = _PUBSUB_DEFAULTS["subscription"].default
    pubsub_dead_letter_topic: str = "klio-media-events-dead-letter"
    pubsub_output_topic: str = "klio-media-outputs"
    pubsub_ack_deadline_s: int = Field(default=_PUBSUB_DEFAULTS["ack_deadline_seconds"].default, ge=10, le=600)
    pubsub_emulator_host: str | None = None
    pubsub_emulator_port: int = DEFAULT_EMULATOR_PORT
    media_port: int = 3001
    demo_count: int = Field(default=12, ge=0)
    dev_workers: int = Field(default=os.cpu_count() or 1, ge=0)
    sensor_hold_while_queued: bool = True
    streaming: bool = False
    pubsub_retry_topic: str = "klio-media-events-retry"
    pubsub_retry_subscription: str = _PUBSUB_DEFAULTS["retry_subscription"].default
    stream_rotate_after_s: float = Field(default=3600.0, ge=0)
    workspace: str | None = None
    retention_days: float = Field(default=30.0, ge=0)
    pubsub_upstream_topic: str | None = None  # set by for_location, not by a variable
    beam_runner: BeamRunner = Field(default_factory=BeamRunner)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        values: dict = {field: environ[name] for field, name in _VARIABLES.items() if environ.get(name)}
        if "source_suffixes" in values:
            values["source_suffixes"] = tuple(parse_suffixes(values["source_suffixes"], "KLIO_SOURCE_SUFFIXES"))
        try:
            return cls(beam_runner=beam_runner_from(environ), **values)
        except ValidationError as e:
            problems = "; ".join(f"{_VARIABLES.get(str(err['loc'][0]), err['loc'][0])}: {err['msg']} "
                                 f"(got {err.get('input')!r})" for err in e.errors())
            raise ValueError(f"bad setting: {problems}") from None

    def for_location(self, name: str, input_topic: str, upstream_topic: str | None = None) -> "Settings":
        """These settings for another team's code location ``name`` (``klio_assets.code_location``):
        its events come from ``input_topic``, it asks for missing inputs on ``upstream_topic``;
        its subscription, event output, dead letters and retries are its own, named after it."""
        return self.model_copy(update={
            "pubsub_upstream_topic": upstream_topic,
            "pubsub_topic": input_topic, "pubsub_subscription": f"{input_topic}-{name}",
            "pubsub_output_topic": f"{name}-outputs", "pubsub_dead_letter_topic": f"{name}-dead-letter",
            "pubsub_retry_topic": f"{name}-retry", "pubsub_retry_subscription": f"{name}-retry-dagster"})

    @property
    def pubsub_configured(self) -> bool:
        """Whether events can flow: a real project, or an emulator to talk to."""
        return bool(self.pubsub_project or self.pubsub_emulator_host)

    def media_storage(self) -> LocalMediaStorage | GCSMediaStorage:
        if self.data_root.startswith("gs://"):
            return GCSMediaStorage(root=self.data_root, source_suffixes=list(self.source_suffixes),
                                   **({"media_url": self.media_url} if self.media_url else {}))
        return LocalMediaStorage(root=os.path.abspath(self.data_root), source_suffixes=list(self.source_suffixes),
                                 media_url=self.media_url)

    def pubsub(self, ack_deadline_s: int | None = None) -> PubSubResource:
        """The Pub/Sub resource: the configured project, or the emulator's ``klio-dev``."""
        return PubSubResource(
            project=self.pubsub_project or DEV_PROJECT, topic=self.pubsub_topic,
            subscription=self.pubsub_subscription, dead_letter_topic=self.pubsub_dead_letter_topic,
            output_topic=self.pubsub_output_topic,
            retry_topic=self.pubsub_retry_topic if self.streaming else None,
            retry_subscription=self.pubsub_retry_subscription, upstream_topic=self.pubsub_upstream_topic,
            ack_deadline_seconds=ack_deadline_s or self.pubsub_ack_deadline_s)

"""The Beam runner resource: which runner executes media pipelines, and with what options.

DirectRunner is the default. DataflowRunner takes its settings from ``dataflow`` and DaskRunner
from ``dask``; ``beam_runner_from`` builds the resource from ``KLIO_BEAM_*``,
``KLIO_DATAFLOW_*`` and ``KLIO_DASK_*`` variables, so moving a deployment from one runner to
another is configuration only.
"""

import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import dagster as dg
from apache_beam.options.pipeline_options import PipelineOptions
from pydantic import Field, field_validator

from klio_core.media_store import MediaStore
from pipelines.run import MediaPipelineRun
from pipelines.specs import ItemTask
from pipelines.streaming import build_streaming_pipeline

# Short names for runners that Beam only knows by their full class path.
RUNNER_ALIASES = {"DaskRunner": "apache_beam.runners.dask.dask_runner.DaskRunner"}


class DataflowSettings(dg.Config):
    """Where and on what Dataflow runs a media pipeline. Workers need this project's code: give
    ``sdk_container_image`` (the Dockerfile's ``beam-worker`` image, the recommended way) or
    ``setup_file``."""

    project: str = Field(description="Google Cloud project that runs the Dataflow jobs.")
    region: str = Field(description="Dataflow regional endpoint, e.g. europe-west1.")
    temp_location: str = Field(description="gs:// prefix for temporary files (also the staging default).")
    staging_location: str | None = Field(default=None, description="gs:// prefix for staged files.")
    sdk_container_image: str | None = Field(
        default=None, description="Worker image with this project installed (Dockerfile target beam-worker).")
    setup_file: str | None = Field(default=None, description="setup.py to install on workers, if no image.")
    machine_type: str = Field(default="n2-standard-4", description="Worker machine type.")
    num_workers: int = Field(default=1, ge=1, description="Workers at start.")
    max_num_workers: int = Field(default=20, ge=1, description="Autoscaling ceiling.")
    autoscaling_algorithm: Literal["THROUGHPUT_BASED", "NONE"] = Field(
        default="THROUGHPUT_BASED", description="THROUGHPUT_BASED scales between the two; NONE keeps num_workers.")
    service_account_email: str | None = Field(default=None, description="Worker service account.")
    subnetwork: str | None = Field(default=None, description="Worker subnetwork (regions/R/subnetworks/S URL).")
    use_public_ips: bool = Field(default=True, description="False keeps workers on private IPs.")

    @field_validator("temp_location", "staging_location")
    @classmethod
    def _on_gcs(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith("gs://") and len(value) > len("gs://")):
            raise ValueError(f"Dataflow needs a gs:// location, not {value!r}")
        return value

    def args(self) -> list[str]:
        if not (self.sdk_container_image or self.setup_file):
            raise ValueError("Dataflow workers need this project's code: set dataflow.sdk_container_image "
                             "(the Dockerfile's beam-worker image) or dataflow.setup_file")
        optional = {"staging_location": self.staging_location, "sdk_container_image": self.sdk_container_image,
                    "setup_file": self.setup_file, "service_account_email": self.service_account_email,
                    "subnetwork": self.subnetwork}
        return [
            f"--project={self.project}", f"--region={self.region}", f"--temp_location={self.temp_location}",
            f"--machine_type={self.machine_type}", f"--num_workers={self.num_workers}",
            f"--max_num_workers={self.max_num_workers}", f"--autoscaling_algorithm={self.autoscaling_algorithm}",
            *(f"--{name}={value}" for name, value in optional.items() if value),
            *([] if self.use_public_ips else ["--no_use_public_ips"]),
            # the image already holds the SDK: nothing to stage for it
            *(["--sdk_location=container"] if self.sdk_container_image else []),
        ]


class DaskSettings(dg.Config):
    """The dask.distributed cluster a DaskRunner pipeline runs on."""

    client_address: str = Field(description="Scheduler address, e.g. tcp://dask-scheduler:8786.")
    npartitions: int | None = Field(default=None, ge=1, description=(
        "Dask bag partitions per pipeline. Default: one per media ID, since an item takes seconds: "
        "work spreads over every worker, and a lost worker loses one item's work."))

    def args(self) -> list[str]:
        partitions = f"--dask_npartitions={self.npartitions}" if self.npartitions else "--dask_partition_size=1"
        return [f"--dask_client_address={self.client_address}", partitions]


class BeamRunner(dg.ConfigurableResource):
    """Runs a run's media assets over its batch of IDs as one Beam pipeline on the configured runner."""

    runner: str = Field(
        default="DirectRunner",
        description="Beam runner: DirectRunner (default), DataflowRunner, DaskRunner, or a runner class path.",
    )
    pipeline_args: list[str] = Field(
        default=["--direct_running_mode=in_memory"],
        description=(
            "Extra Beam pipeline flags exactly as on a Beam command line, e.g. "
            "['--direct_num_workers=2', '--direct_running_mode=multi_processing']. They come after, and "
            "so override, the flags made from `dataflow` and `dask`."
        ),
    )
    dataflow: DataflowSettings | None = Field(default=None, description="Settings for DataflowRunner.")
    dask: DaskSettings | None = Field(default=None, description="Settings for DaskRunner.")
    progress_interval_s: float = Field(
        default=2.0, gt=0, description=(
            "Seconds between the workers' writes of finished items and the run's reads of them: how "
            "soon a finished media ID shows as materialized in the UI while the pipeline goes on."))

    def pipeline_options(self, job_name: str, extra: Sequence[str] = ()) -> PipelineOptions:
        """The options for one pipeline. Beam checks them (required Dataflow options, formats)
        when the pipeline is built, before anything is submitted."""
        runner = RUNNER_ALIASES.get(self.runner, self.runner)
        runner_args = []
        if self.runner == "DataflowRunner":
            if self.dataflow is None:
                raise ValueError("runner DataflowRunner needs the `dataflow` settings (project, region, ...)")
            runner_args = self.dataflow.args()
        elif self.runner == "DaskRunner":
            if self.dask is None:
                raise ValueError("runner DaskRunner needs the `dask` settings (client_address)")
            runner_args = self.dask.args()
        return PipelineOptions([f"--runner={runner}", f"--job_name={job_name}", *runner_args, *extra,
                                *self.pipeline_args])

    def deploy_stream(self, tasks: Sequence[ItemTask], store: MediaStore, *, subscription_path: str,
                      results_topic_path: str, dead_letter_topic_path: str | None = None,
                      job_name: str = "klio-media-stream", update: bool = False) -> None:
        """Submit the media stream as ONE streaming Beam job (``pipelines.streaming``): on
        Dataflow it is deployed once, and ``update`` replaces the running job of the same name
        in place (Dataflow's ``--update``); stop it with a drain (``gcloud dataflow jobs drain``),
        which finishes what it read. The Dagster stream run reads its result messages."""
        options = self.pipeline_options(job_name, ["--streaming", *(["--update"] if update else [])])
        pipeline = build_streaming_pipeline(tasks, store, options, subscription_path=subscription_path,
                                            results_topic_path=results_topic_path,
                                            dead_letter_topic_path=dead_letter_topic_path)
        pipeline.run()

    def run(self, tasks: Sequence[ItemTask], store: MediaStore, media_ids: list[str], run_id: str) -> MediaPipelineRun:
        """One pipeline that passes each media ID through ``tasks``; iterate its ``results()``."""
        job_name = re.sub(r"[^a-z0-9-]", "-", f"klio-media-{run_id[:8]}".lower())
        return MediaPipelineRun(tasks, store, media_ids, self.pipeline_options(job_name),
                                store.scratch_uri(run_id, "media"), self.progress_interval_s)


def beam_runner_from(environ: Mapping[str, str]) -> BeamRunner:
    """The runner resource from environment variables (``klio_assets.settings`` passes them;
    unset variables keep the defaults):

    - ``KLIO_BEAM_RUNNER``: DirectRunner, DataflowRunner or DaskRunner;
    - ``KLIO_BEAM_ARGS``: extra Beam flags, shell-quoted;
    - ``KLIO_DATAFLOW_<FIELD>``: each ``DataflowSettings`` field, e.g. ``KLIO_DATAFLOW_PROJECT``;
    - ``KLIO_DASK_<FIELD>``: each ``DaskSettings`` field, e.g. ``KLIO_DASK_CLIENT_ADDRESS``.
    """
    settings: dict[str, Any] = {}
    for name, cls in (("dataflow", DataflowSettings), ("dask", DaskSettings)):
        fields = {field: environ[f"KLIO_{name.upper()}_{field.upper()}"] for field in cls.model_fields
                  if f"KLIO_{name.upper()}_{field.upper()}" in environ}
        if fields:  # pydantic converts the strings ("40", "false") to the fields' types
            settings[name] = cls.model_validate(fields)
    settings["runner"] = environ.get("KLIO_BEAM_RUNNER", "DirectRunner")
    if "KLIO_BEAM_ARGS" in environ:
        settings["pipeline_args"] = shlex.split(environ["KLIO_BEAM_ARGS"])
    return BeamRunner(**settings)

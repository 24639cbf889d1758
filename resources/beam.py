"""The Beam runner resource: which runner executes media pipelines, and with what options."""

import re
from collections.abc import Callable

import dagster as dg
from apache_beam.options.pipeline_options import PipelineOptions
from pydantic import Field

from pipelines.items import ItemTask
from pipelines.run import PipelineOutcome, run_item_pipeline


class BeamRunner(dg.ConfigurableResource):
    """Runs each media asset's batch of IDs as one Beam pipeline on the configured runner."""

    runner: str = Field(
        default="DirectRunner",
        description="Beam runner name: DirectRunner (default), DataflowRunner, DaskRunner, ...",
    )
    pipeline_args: list[str] = Field(
        default=["--direct_running_mode=in_memory"],
        description=(
            "Extra Beam pipeline flags exactly as on a Beam command line, e.g. "
            "['--direct_num_workers=2', '--direct_running_mode=multi_processing'] or "
            "['--project=my-project', '--region=europe-west1', '--temp_location=gs://b/tmp']."
        ),
    )

    progress_interval_s: float = Field(
        default=15.0, gt=0, description="Seconds between progress lines (done / total) while a pipeline runs.")

    def pipeline_options(self, job_name: str) -> PipelineOptions:
        return PipelineOptions([f"--runner={self.runner}", f"--job_name={job_name}",
                                *self.pipeline_args])

    def run(self, task: ItemTask, store, media_ids: list[str], run_id: str,
            on_progress: Callable[[int, int], None] | None = None) -> PipelineOutcome:
        job_name = re.sub(r"[^a-z0-9-]", "-", f"klio-{task.name}-{run_id[:8]}".lower())
        return run_item_pipeline(task, store, media_ids, self.pipeline_options(job_name),
                                 store.scratch_uri(run_id, task.name), on_progress, self.progress_interval_s)

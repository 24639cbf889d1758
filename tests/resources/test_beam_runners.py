"""Beam runners beyond the default DirectRunner.

DataflowRunner cannot run here (no Google Cloud account): the test goes up to the boundary with
Beam's public options only. Beam's DataflowRunner translates the real media pipeline, built with
the runner resource's options, stages it to a GCS API emulator, and writes the Dataflow job
request as a classic template (``--template_location``) instead of submitting it. The template
holds the job's environment (worker pool, image, autoscaling) as Dataflow would receive it.
Submitting the job, and the job running, are the untested boundary.

DaskRunner runs for real: a local ``dask.distributed`` cluster of worker processes materializes
media assets through the same Dagster assets, and the outputs equal librosa's.
"""

import json

import pytest
from apache_beam.portability.api import beam_runner_api_pb2
from distributed import LocalCluster
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from klio_assets import build_media_assets
from klio_assets.builtin.audio import AUDIO_ASSETS
from klio_core.media_store import GCSMediaStore
from pipelines.run import build_media_pipeline
from resources.beam import BeamRunner, DaskSettings, DataflowSettings, beam_runner_from
from resources.storage import LocalMediaStorage
from tests.conftest import materialize_ids, materialized_partitions, run_summary
from tests.klio_assets.builtin.test_audio import assert_matches_librosa

BEAM_BUCKET = "klio-beam"
DATAFLOW = DataflowSettings(
    project="klio-prod", region="europe-west1", temp_location=f"gs://{BEAM_BUCKET}/tmp",
    staging_location=f"gs://{BEAM_BUCKET}/staging",
    sdk_container_image="europe-docker.pkg.dev/klio-prod/klio/beam-worker:1.0",
    machine_type="n2-highmem-8", num_workers=2, max_num_workers=40,
    service_account_email="klio-workers@klio-prod.iam.gserviceaccount.com", use_public_ips=False)


@pytest.fixture
def google_cloud(gcs_emulator, tmp_path, monkeypatch):
    """GCS is the emulator, and the login is a stand-in: an access token that never expires, so
    nothing asks Google's token service (Beam checks the buckets before it stages)."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    login = tmp_path / "application_default_credentials.json"
    login.write_text(json.dumps({"type": "authorized_user", "client_id": "test", "client_secret": "test",
                                 "refresh_token": "test", "token": "stand-in", "expiry": "2999-01-01T00:00:00Z"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(login))
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", DATAFLOW.project)
    client = storage.Client(project=DATAFLOW.project, credentials=AnonymousCredentials())
    if client.lookup_bucket(BEAM_BUCKET) is None:
        client.create_bucket(BEAM_BUCKET)
    return client


def dataflow_job_request(runner: BeamRunner, gcs: storage.Client, template):
    """The Dataflow job request that Beam would submit for a run of every audio asset over three
    IDs (the runner's args write it to ``template``), and the pipeline it staged for it."""
    options = runner.pipeline_options("klio-media-0123abcd")
    store = GCSMediaStore("gs://klio-media/catalogue")
    pipeline = build_media_pipeline([a.task(None) for a in AUDIO_ASSETS], store, ["a", "b", "c"], options,
                                    store.scratch_uri("0123abcd", "media") + "/results")
    pipeline.run()
    job = json.loads(template.read_text())
    # staged beside the job's packages, as "storage.googleapis.com/<bucket>/<folder>/<name>"
    folder = job["environment"]["workerPools"][0]["packages"][0]["location"].rsplit("/", 1)[0]
    bucket, path = folder.removeprefix("storage.googleapis.com/").split("/", 1)
    staged = gcs.bucket(bucket).blob(f"{path}/pipeline.pb").download_as_bytes()
    return job, beam_runner_api_pb2.Pipeline.FromString(staged)


def test_dataflow_options_from_the_resource_reach_the_job_request(google_cloud, tmp_path):
    template = tmp_path / "job.json"
    runner = BeamRunner(runner="DataflowRunner", dataflow=DATAFLOW, pipeline_args=[f"--template_location={template}"])
    job, staged_pipeline = dataflow_job_request(runner, google_cloud, template)

    env = job["environment"]
    options = env["sdkPipelineOptions"]["options"]
    assert (options["project"], options["region"], job["name"]) == ("klio-prod", "europe-west1", "klio-media-0123abcd")
    assert options["staging_location"].startswith("gs://klio-beam/staging/klio-media-0123abcd.")
    assert env["tempStoragePrefix"].startswith("storage.googleapis.com/klio-beam/tmp")
    assert env["serviceAccountEmail"] == "klio-workers@klio-prod.iam.gserviceaccount.com"
    [pool] = env["workerPools"]
    assert (pool["machineType"], pool["numWorkers"]) == ("n2-highmem-8", 2)
    assert pool["autoscalingSettings"] == {"algorithm": "AUTOSCALING_ALGORITHM_BASIC",  # THROUGHPUT_BASED
                                           "maxNumWorkers": 40}
    assert pool["ipConfiguration"] == "WORKER_IP_PRIVATE"
    assert pool["workerHarnessContainerImage"] == DATAFLOW.sdk_container_image
    assert {i["containerImage"] for i in pool["sdkHarnessContainerImages"]} == {DATAFLOW.sdk_container_image}
    # the media pipeline itself, ONE per-item step for every asset, is what was staged
    names = {t.unique_name for t in staged_pipeline.components.transforms.values()}
    assert {n.split("/")[0] for n in names if not n.startswith("ref_")} == {"MediaIds", "ProcessMedia"}


def test_the_media_stream_is_one_dataflow_streaming_job_reading_pubsub(google_cloud, tmp_path):
    """What Dataflow would run for the stream (to the boundary: Beam writes the job request as a
    template): a streaming job, on the worker image, that reads the input subscription and
    writes result messages, with the same per-item step as the batch job."""
    template = tmp_path / "stream.json"
    runner = BeamRunner(runner="DataflowRunner", dataflow=DATAFLOW, pipeline_args=[f"--template_location={template}"])
    subscription = "projects/klio-prod/subscriptions/klio-media-events-dagster"
    runner.deploy_stream([a.task(None) for a in AUDIO_ASSETS], GCSMediaStore("gs://klio-media/catalogue"),
                         subscription_path=subscription, results_topic_path="projects/klio-prod/topics/klio-media-results",
                         dead_letter_topic_path="projects/klio-prod/topics/klio-media-events-dead-letter")
    job = json.loads(template.read_text())
    assert (job["type"], job["name"]) == ("JOB_TYPE_STREAMING", "klio-media-stream")
    [pool] = job["environment"]["workerPools"]
    assert pool["workerHarnessContainerImage"] == DATAFLOW.sdk_container_image
    assert pool["autoscalingSettings"]["maxNumWorkers"] == 40
    folder = pool["packages"][0]["location"].rsplit("/", 1)[0]
    bucket, path = folder.removeprefix("storage.googleapis.com/").split("/", 1)
    staged = beam_runner_api_pb2.Pipeline.FromString(
        google_cloud.bucket(bucket).blob(f"{path}/pipeline.pb").download_as_bytes())
    transforms = staged.components.transforms.values()
    reads = [t for t in transforms if t.spec.urn == "beam:transform:pubsub_read:v1"]
    assert len(reads) == 1 and subscription.encode() in reads[0].spec.payload
    assert any(t.spec.urn == "beam:transform:pubsub_write:v1" for t in transforms)
    tops = {t.unique_name.split("/")[0] for t in transforms if not t.unique_name.startswith("ref_")}
    assert {"ReadEvents", "DecodeEvents", "ProcessEvent", "WriteResults", "DeadLetter"} <= tops


def test_dataflow_settings_are_checked_before_anything_is_submitted():
    with pytest.raises(ValueError, match="gs:// location"):
        DataflowSettings(project="p", region="europe-west1", temp_location="/tmp/beam", sdk_container_image="i")
    no_code = DataflowSettings(project="p", region="europe-west1", temp_location="gs://b/tmp")
    with pytest.raises(ValueError, match="sdk_container_image"):
        BeamRunner(runner="DataflowRunner", dataflow=no_code).pipeline_options("job")
    with pytest.raises(ValueError, match="needs the `dataflow` settings"):
        BeamRunner(runner="DataflowRunner").pipeline_options("job")
    with pytest.raises(ValueError, match="needs the `dask` settings"):
        BeamRunner(runner="DaskRunner").pipeline_options("job")
    # Beam's own validation runs when the pipeline is built: a job name Dataflow refuses
    bad_name = BeamRunner(runner="DataflowRunner", dataflow=DATAFLOW, pipeline_args=["--dry_run=True"])
    with pytest.raises(ValueError, match="job_name"):
        build_media_pipeline([a.task(None) for a in AUDIO_ASSETS], GCSMediaStore("gs://m/c"), ["a"],
                             bad_name.pipeline_options("Not_A_Valid_Name"), "gs://m/c/.scratch")


def test_runner_from_environment_is_configuration_only(google_cloud, tmp_path):
    template = tmp_path / "job.json"
    assert beam_runner_from({}) == BeamRunner()
    runner = beam_runner_from({
        "KLIO_BEAM_RUNNER": "DataflowRunner",
        "KLIO_BEAM_ARGS": f"--template_location={template} --experiments=shuffle_mode=service",
        "KLIO_DATAFLOW_PROJECT": "klio-prod", "KLIO_DATAFLOW_REGION": "europe-west1",
        "KLIO_DATAFLOW_TEMP_LOCATION": "gs://klio-beam/tmp", "KLIO_DATAFLOW_MAX_NUM_WORKERS": "40",
        "KLIO_DATAFLOW_SDK_CONTAINER_IMAGE": "img:1", "KLIO_DATAFLOW_USE_PUBLIC_IPS": "false"})
    assert runner.dataflow == DataflowSettings(project="klio-prod", region="europe-west1",
                                               temp_location="gs://klio-beam/tmp", max_num_workers=40,
                                               sdk_container_image="img:1", use_public_ips=False)
    job, _ = dataflow_job_request(runner, google_cloud, template)
    assert job["environment"]["workerPools"][0]["autoscalingSettings"]["maxNumWorkers"] == 40
    assert "shuffle_mode=service" in job["environment"]["experiments"]
    dask = beam_runner_from({"KLIO_BEAM_RUNNER": "DaskRunner", "KLIO_DASK_CLIENT_ADDRESS": "tcp://s:8786"})
    assert dask.dask == DaskSettings(client_address="tcp://s:8786")


@pytest.fixture(scope="module")
def dask_cluster():
    """A real dask.distributed cluster: a scheduler and two worker processes on this machine."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster


@pytest.mark.slow
def test_media_assets_materialize_on_a_dask_cluster(dask_cluster, instance, store_root, catalogue_ids):
    runner = BeamRunner(runner="DaskRunner",
                        dask=DaskSettings(client_address=dask_cluster.scheduler_address, npartitions=2))
    resources = {"media_storage": LocalMediaStorage(root=store_root), "beam_runner": runner}
    features = ["waveform", "spectrogram", "mel_spectrogram", "mfcc"]
    result = materialize_ids([build_media_assets(AUDIO_ASSETS)], catalogue_ids, instance, resources,
                             selection=features)
    assert result.success
    for asset in features:
        assert materialized_partitions(instance, asset) == set(catalogue_ids), asset
    for media_id in catalogue_ids:
        assert_matches_librosa(store_root, media_id)
    # the items were processed by the cluster: ONE pipeline for the four assets, in 2 partitions
    dofn_tasks = dask_cluster.scheduler.task_prefixes["apply_dofn_to_bundle"].state_counts
    assert dofn_tasks["memory"] == 2
    summary = run_summary(instance, "mfcc", result.run_id)
    assert (summary["received"], summary["materialized"], summary["failed"]) == (4, 4, 0)


@pytest.mark.slow
def test_a_per_worker_model_is_loaded_once_per_dask_worker(dask_cluster, instance, store_root, catalogue_ids, tmp_path):
    from tests.klio_assets.test_worker_resources import loads, model_asset

    log = str(tmp_path / "loads")
    runner = BeamRunner(runner="DaskRunner",
                        dask=DaskSettings(client_address=dask_cluster.scheduler_address, npartitions=4))
    resources = {"media_storage": LocalMediaStorage(root=store_root), "beam_runner": runner}
    result = materialize_ids([build_media_assets([AUDIO_ASSETS[0], model_asset(log)])], catalogue_ids, instance,
                             resources)
    assert result.success
    assert materialized_partitions(instance, "loudness_by_model") == set(catalogue_ids)
    pids = loads(log)
    worker_pids = {str(w.pid) for w in dask_cluster.workers.values()}
    # four bundles on two workers: each worker that ran one loaded the model once, however many
    assert pids and len(pids) == len(set(pids)) and set(pids) <= worker_pids, (pids, worker_pids)

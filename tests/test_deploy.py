"""The Kubernetes deployment, checked offline as far as this machine allows.

No Docker engine, Kubernetes cluster or Helm binary runs here, and Dagster's chart cannot be
fetched. So: the Dockerfile is linted (hadolint) and compared with the project; a wheel built
from exactly the files it copies loads the code location; the Helm values and manifests are
linted (yamllint), compared with the code and with ``deploy/dagster.yaml``, and checked against
the Kubernetes API schemas (kubernetes-validate); and the real ``K8sRunLauncher``, configured by
``deploy/dagster.yaml``, sends its run Job to a stand-in Kubernetes API server on this machine,
whose request body must be a valid ``batch/v1`` Job. Building the image, rendering the chart and
running pods are the untested boundary (docs/deploy.md).
"""

import json
import os
import re
import subprocess
import sys
import threading
import time
import tomllib
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import apache_beam
import dagster as dg
import kubernetes_validate
import pytest
import yaml

from klio_dev.pubsub_emulator import free_port
from klio_dev.stack import stop_server
from resources.dagster_tags import PARTITION_TAG

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
K8S_VERSION = "1.32.0"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
VALUES = yaml.safe_load((ROOT / "deploy/helm/values.yaml").read_text())
INSTANCE = yaml.safe_load((ROOT / "deploy/dagster.yaml").read_text())
ENV_CONFIG_MAP = yaml.safe_load((ROOT / "deploy/k8s/klio-assets-env.yaml").read_text())
CODE_IMAGE = "europe-docker.pkg.dev/klio-prod/klio/klio-assets:0.1.0"


def dockerfile_arg(name: str) -> str:
    return re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.M).group(1)


def copied_paths() -> set[str]:
    """What the `source` stage copies from the build context (both images install from it)."""
    body = DOCKERFILE.split(" AS source\n", 1)[1].split("\nFROM ", 1)[0]
    return {src.rstrip("/") for line in re.findall(r"^COPY (.+) \S+$", body, re.M) for src in line.split()}


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "teams/music_tags/Dockerfile"])
def test_dockerfile_passes_hadolint(dockerfile):
    result = subprocess.run([VENV_BIN / "hadolint", dockerfile], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_matches_the_project():
    # Dataflow workers must run the SDK version that built the job
    assert dockerfile_arg("BEAM_VERSION") == apache_beam.__version__
    assert dockerfile_arg("PYTHON_VERSION") == f"{sys.version_info.major}.{sys.version_info.minor}"
    packages = {p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages | {"pyproject.toml", "requirements.lock", "model-requirements.txt", "README.md"} <= copied_paths()
    for stage in ("beam-worker", "code-location"):
        body = DOCKERFILE.split(f" AS {stage}\n", 1)[1].split("\nFROM ", 1)[0]
        assert "COPY --from=source /src /opt/klio" in body, stage
        # the locked set and the model, with their bytecode written at build time (every
        # process would compile them from source again where PYTHONDONTWRITEBYTECODE is set)
        assert "pip install --no-cache-dir --compile -c requirements.lock ." in body, stage
        assert "pip install --no-cache-dir --compile --no-deps -r model-requirements.txt" in body, stage
        # librosa's kernels compiled by one process at build time (pipelines/numba_cache.py)
        assert "python -m pipelines.numba_cache" in body, stage
    module = PYPROJECT["tool"]["dagster"]["module_name"]
    assert f'"--module-name", "{module}"' in DOCKERFILE
    dockerignore = (ROOT / ".dockerignore").read_text().split()
    assert all(f"!{path}/" in dockerignore or f"!{path}" in dockerignore for path in copied_paths())


@pytest.mark.slow
def test_a_wheel_of_the_copied_files_loads_the_code_location(tmp_path):
    """What the image installs (`pip install .` over the copied files) is enough to load every
    definition, from a folder that is not the repository."""
    context = tmp_path / "context"
    context.mkdir()
    for path in copied_paths():
        subprocess.run(["cp", "-r", ROOT / path, context / path], check=True)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", site, context], check=True, capture_output=True)
    probe = ("import klio_assets, klio_assets.definitions as d; "
             "print(klio_assets.__file__); print(len(list(d.defs.resolve_asset_graph().get_all_asset_keys())))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(site), "KLIO_DATA_ROOT": str(tmp_path / "data")})
    assert result.returncode == 0, result.stderr[-3000:]
    location, asset_count = result.stdout.split()
    assert location.startswith(str(site))
    assert int(asset_count) >= 12


def test_deploy_yaml_passes_yamllint():
    result = subprocess.run([VENV_BIN / "yamllint", "--strict", "deploy", "dagster.yaml", "workspace.yaml"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_helm_values_point_at_the_code_location_and_reference_secrets_by_name():
    [deployment, team] = VALUES["dagster-user-deployments"]["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    assert args[args.index("--module-name") + 1] == PYPROJECT["tool"]["dagster"]["module_name"]
    assert f"EXPOSE {deployment['port']}" in DOCKERFILE
    # the second team's deployment: its own image, port and module, the same settings and secrets
    team_dockerfile = (ROOT / "teams/music_tags/Dockerfile").read_text()
    team_args = team["dagsterApiGrpcArgs"]
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"]
    assert team_args[team_args.index("--module-name") + 1] == workspace[1]["python_module"]["module_name"]
    assert f"EXPOSE {team['port']}" in team_dockerfile and team["port"] != deployment["port"]
    assert team["image"]["repository"] != deployment["image"]["repository"]
    assert (team["envConfigMaps"], team["envSecrets"]) == (deployment["envConfigMaps"], deployment["envSecrets"])
    config_map = ENV_CONFIG_MAP["metadata"]["name"]
    launcher = VALUES["runLauncher"]["config"]["k8sRunLauncher"]
    for env_from in (deployment, launcher, VALUES["dagsterDaemon"], VALUES["dagsterWebserver"]):
        assert {"name": config_map} in env_from["envConfigMaps"]
    assert launcher["envSecrets"] == deployment["envSecrets"] == [{"name": "klio-assets-secrets"}]
    # the PostgreSQL password: an existing secret, never a value here
    assert VALUES["generatePostgresqlPasswordSecret"] is False
    assert VALUES["postgresql"]["enabled"] is False and "postgresqlPassword" not in VALUES["postgresql"]
    assert VALUES["global"]["postgresqlSecretName"]


def secret_like_values(node, path=""):
    """(path, value) of every string under a key that names a password, token, key or credential."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str) and re.search(r"password|token|private_?key|credential", str(key), re.I):
                yield f"{path}.{key}", value
            yield from secret_like_values(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from secret_like_values(value, f"{path}[{i}]")


def test_no_secret_value_is_committed():
    documents = {path: list(yaml.safe_load_all(path.read_text()))
                 for path in [*ROOT.glob("deploy/**/*.yaml"), ROOT / "dagster.yaml"]}
    found = [(str(path), *hit) for path, docs in documents.items() for hit in secret_like_values(docs)]
    assert found == []
    # the only credential the instance needs arrives from the environment
    for storage in ("run_storage", "event_log_storage", "schedule_storage"):
        assert INSTANCE[storage]["config"] == {"postgres_url": {"env": "DAGSTER_PG_URL"}}
    assert "ENV " not in DOCKERFILE.replace("ENV PYTHONUNBUFFERED", "")  # no secret baked into the image


def test_helm_instance_settings_equal_deploy_dagster_yaml():
    daemon = VALUES["dagsterDaemon"]
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    coordinator = INSTANCE["run_coordinator"]["config"]
    assert INSTANCE["run_coordinator"]["class"] == daemon["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert queued["maxConcurrentRuns"] == coordinator["max_concurrent_runs"]
    assert queued["tagConcurrencyLimits"] == coordinator["tag_concurrency_limits"]
    retries = daemon["runRetries"]
    assert (retries["enabled"], retries["maxRetries"], retries["retryOnAssetOrOpFailure"]) == (
        INSTANCE["run_retries"]["enabled"], INSTANCE["run_retries"]["max_retries"],
        INSTANCE["run_retries"]["retry_on_asset_or_op_failure"])
    launcher = INSTANCE["run_launcher"]["config"]
    helm_run_resources = VALUES["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["containerConfig"]
    assert launcher["run_k8s_config"]["container_config"] == helm_run_resources
    assert launcher["env_config_maps"] == [ENV_CONFIG_MAP["metadata"]["name"]]
    assert VALUES["retention"]["enabled"] is True
    assert VALUES["retention"]["sensor"]["purgeAfterDays"] == INSTANCE["retention"]["sensor"]["purge_after_days"]


def test_tick_retention_is_set_and_loads_in_both_instances(tmp_path):
    """Dagster keeps successful sensor ticks (each with the cursor) for ever by default."""
    local = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert local["retention"] == INSTANCE["retention"]
    assert set(local["retention"]["sensor"]["purge_after_days"]) == {"skipped", "success", "failure", "started"}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump({"retention": local["retention"]}))
    with dg.DagsterInstance.from_config(str(tmp_path)):  # Dagster validates the section here
        pass


def test_env_config_map_is_a_valid_manifest_that_configures_the_code(tmp_path):
    kubernetes_validate.validate(ENV_CONFIG_MAP, K8S_VERSION, strict=True)
    probe = """
import json
from klio_assets.definitions import defs
resources = defs.resources
runner = resources["beam_runner"]
options = runner.pipeline_options("klio-mfcc-0123abcd").get_all_options(drop_default=True)
print(json.dumps({"storage": type(resources["media_storage"]).__name__, "root": resources["media_storage"].root,
                  "runner": runner.runner, "options": {k: str(v) for k, v in options.items()},
                  "project": resources["pubsub"].project}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLIO_", "PUBSUB_EMULATOR"))}
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                            env={**env, **ENV_CONFIG_MAP["data"], "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.splitlines()[-1])
    data = ENV_CONFIG_MAP["data"]
    assert (loaded["storage"], loaded["root"]) == ("GCSMediaStorage", data["KLIO_DATA_ROOT"])
    assert loaded["runner"] == "DataflowRunner" and loaded["project"] == data["KLIO_PUBSUB_PROJECT"]
    options = loaded["options"]
    assert options["sdk_container_image"] == data["KLIO_DATAFLOW_SDK_CONTAINER_IMAGE"]
    assert (options["region"], options["max_num_workers"]) == (data["KLIO_DATAFLOW_REGION"], "20")
    assert options["temp_location"] == data["KLIO_DATAFLOW_TEMP_LOCATION"]


def test_the_pods_get_the_dagster_settings_the_project_instance_gives_itself():
    """Dagster's Helm chart runs Dagster's own event log class, which does not set them."""
    from resources.dagster_settings import DEFAULTS

    assert {name: ENV_CONFIG_MAP["data"].get(name) for name in DEFAULTS} == DEFAULTS


class StandInKubernetesApi(BaseHTTPRequestHandler):
    """Answers job creation as the Kubernetes API does (201 with the object) and records it."""

    received: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append((self.path, body))
        ok = re.fullmatch(r"/apis/batch/v1/namespaces/[^/]+/jobs", self.path)
        payload = json.dumps(body if ok else {"kind": "Status", "code": 404}).encode()
        self.send_response(201 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def kubernetes_api(tmp_path):
    StandInKubernetesApi.received = []
    server = HTTPServer(("127.0.0.1", 0), StandInKubernetesApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "here",
        "clusters": [{"name": "here", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
        "users": [{"name": "runs", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": "here", "context": {"cluster": "here", "user": "runs"}}],
    }))
    yield str(kubeconfig), StandInKubernetesApi.received
    server.shutdown()


@pytest.fixture
def code_server(tmp_path):
    """The code location served over gRPC as in the cluster: ``dagster code-server`` with the
    image it runs in. Yields its port."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "dagster", "code-server", "start", "-h", "127.0.0.1", "-p", str(port),
         "-m", PYPROJECT["tool"]["dagster"]["module_name"], "--container-image", CODE_IMAGE],
        cwd=ROOT, env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield port
    finally:
        stop_server(server)


@pytest.mark.slow
def test_k8s_run_launcher_sends_a_valid_job_for_a_media_run(tmp_path, kubernetes_api, code_server):
    kubeconfig, received = kubernetes_api
    settings = dict(INSTANCE)
    # this machine: SQLite instead of PostgreSQL (tested in test_postgres_instance), the stand-in
    # API through a kubeconfig instead of the in-cluster service account, and runs launched at
    # once instead of by the daemon's queue
    for storage in ("run_storage", "event_log_storage", "schedule_storage"):
        del settings[storage]
    settings["storage"] = {"sqlite": {"base_dir": str(tmp_path / "storage")}}
    settings["run_coordinator"] = {"module": "dagster.core.run_coordinator", "class": "DefaultRunCoordinator"}
    settings["run_launcher"] = {**INSTANCE["run_launcher"], "config": {
        **INSTANCE["run_launcher"]["config"], "load_incluster_config": False, "kubeconfig_file": kubeconfig}}
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(settings))
    env = {**os.environ, "DAGSTER_HOME": str(home), "DAGSTER_K8S_NAMESPACE": "klio",
           "DAGSTER_K8S_INSTANCE_CONFIG_MAP": "dagster-instance"}
    launch = [sys.executable, "-m", "dagster", "job", "launch", "--grpc-host", "127.0.0.1",
              "--grpc-port", str(code_server), "-j", "media_job", "--tags", json.dumps({PARTITION_TAG: "track-1"})]
    deadline = time.monotonic() + 120  # the code server is loading the definitions
    while (result := subprocess.run(launch, cwd=tmp_path, env=env, capture_output=True, text=True)).returncode:
        assert time.monotonic() < deadline and "UNAVAILABLE" in result.stderr + result.stdout, result.stderr
        time.sleep(1)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [run] = instance.get_runs()
    assert (run.job_name, run.tags[PARTITION_TAG]) == ("media_job", "track-1")

    [(path, job)] = received
    assert path == "/apis/batch/v1/namespaces/klio/jobs"
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == CODE_IMAGE
    assert pod["serviceAccountName"] == INSTANCE["run_launcher"]["config"]["service_account_name"]
    assert {"configMapRef": {"name": "klio-assets-env"}} in container["envFrom"]
    assert {"secretRef": {"name": "klio-assets-secrets"}} in container["envFrom"]
    assert container["args"][:3] == ["dagster", "api", "execute_run"]  # the code server's entry point
    assert run.run_id in container["args"][3]
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}
    # the run worker gets the instance settings (with their env references) in its arguments
    assert "K8sRunLauncher" in container["args"][3] and "klio-assets-env" in container["args"][3]

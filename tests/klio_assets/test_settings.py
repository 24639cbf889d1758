"""Settings come from the environment in one place, typed, and a bad value names its variable."""

import ast
import os

import pytest

from klio_assets.settings import Settings
from klio_core.media_store import DEFAULT_SOURCE_SUFFIXES
from klio_core.stack_file import DEV_PROJECT
from resources.beam import BeamRunner
from resources.storage import GCSMediaStorage, LocalMediaStorage

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_defaults_without_any_variable():
    settings = Settings.from_env({})
    assert settings.data_root == "data" and settings.max_ids_per_run == 500
    assert settings.source_suffixes == tuple(DEFAULT_SOURCE_SUFFIXES)
    assert not settings.pubsub_configured
    assert settings.beam_runner == BeamRunner()
    pubsub = settings.pubsub()
    assert (pubsub.project, pubsub.topic, pubsub.subscription) == (DEV_PROJECT, "klio-media-events",
                                                                   "klio-media-events-dagster")
    assert isinstance(settings.media_storage(), LocalMediaStorage)


def test_every_variable_is_read_and_typed(tmp_path):
    settings = Settings.from_env({
        "KLIO_DATA_ROOT": "gs://bucket/media", "KLIO_MEDIA_URL": "https://media.example",
        "KLIO_SOURCE_SUFFIXES": ".flac,.wav", "KLIO_MAX_IDS_PER_RUN": "37",
        "KLIO_PUBSUB_PROJECT": "prod", "KLIO_PUBSUB_TOPIC": "in", "KLIO_PUBSUB_SUBSCRIPTION": "in-sub",
        "KLIO_PUBSUB_DEAD_LETTER_TOPIC": "dead", "KLIO_PUBSUB_OUTPUT_TOPIC": "out",
        "KLIO_PUBSUB_ACK_DEADLINE_S": "30", "KLIO_PUBSUB_EMULATOR_PORT": "8123", "KLIO_MEDIA_PORT": "3002",
        "KLIO_DEMO_COUNT": "3", "KLIO_BEAM_RUNNER": "DaskRunner", "KLIO_SENSOR_HOLD_WHILE_QUEUED": "false",
        "KLIO_DEV_WORKERS": "0"})
    assert settings.sensor_hold_while_queued is False and Settings.from_env({}).sensor_hold_while_queued
    assert settings.max_ids_per_run == 37 and settings.source_suffixes == (".flac", ".wav")
    assert (settings.pubsub_emulator_port, settings.media_port, settings.demo_count) == (8123, 3002, 3)
    assert settings.dev_workers == 0 and Settings.from_env({}).dev_workers == (os.cpu_count() or 1)
    assert settings.pubsub_configured and settings.beam_runner.runner == "DaskRunner"
    pubsub = settings.pubsub()
    assert (pubsub.project, pubsub.topic, pubsub.subscription, pubsub.dead_letter_topic, pubsub.output_topic,
            pubsub.ack_deadline_seconds) == ("prod", "in", "in-sub", "dead", "out", 30)
    storage = settings.media_storage()
    assert isinstance(storage, GCSMediaStorage) and storage.media_url == "https://media.example"
    assert Settings.from_env({"PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"}).pubsub_configured


@pytest.mark.parametrize(("variable", "value"), [("KLIO_MAX_IDS_PER_RUN", "many"), ("KLIO_MAX_IDS_PER_RUN", "0"),
                                                 ("KLIO_PUBSUB_ACK_DEADLINE_S", "5"),
                                                 ("KLIO_SOURCE_SUFFIXES", "wav")])
def test_a_bad_value_names_its_variable(variable, value):
    with pytest.raises(ValueError, match=variable):
        Settings.from_env({variable: value})


def _reads_klio_variable(node: ast.AST) -> bool:
    """``os.environ[...]``, ``os.environ.get(...)`` or ``os.getenv(...)`` with a ``KLIO_*`` name."""
    def klio(arg):
        return isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("KLIO_")
    if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
        return klio(node.slice)
    if isinstance(node, ast.Call) and ast.unparse(node.func) in ("os.environ.get", "os.getenv", "os.environ.setdefault"):
        return bool(node.args) and klio(node.args[0])
    return False


def test_no_module_but_settings_reads_a_klio_variable():
    readers = []
    for package in ("klio_assets", "klio_core", "pipelines", "resources", "sensors", "jobs"):
        for name in os.listdir(os.path.join(ROOT, package)):
            if name.endswith(".py") and not (package == "klio_assets" and name == "settings.py"):
                path = os.path.join(ROOT, package, name)
                with open(path) as f:
                    if any(_reads_klio_variable(n) for n in ast.walk(ast.parse(f.read()))):
                        readers.append(f"{package}/{name}")
    assert readers == []
    assert _reads_klio_variable(ast.parse('os.environ.get("KLIO_DATA_ROOT", "data")').body[0].value)


def test_with_the_stream_on_the_sensor_takes_only_the_streams_retries(monkeypatch):
    """Both must not read the input subscription: the sensor would turn half the events into
    batch runs beside the stream."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:1")  # clients are made lazily; nothing connects
    batch = Settings.from_env({}).pubsub()
    stream = Settings.from_env({"KLIO_STREAMING": "true"}).pubsub()
    assert batch.retry_topic is None and batch.sensor_subscription_path == batch.subscription_path
    assert stream.retry_topic == "klio-media-events-retry"
    assert stream.sensor_subscription_path.endswith("/klio-media-events-retry-dagster")
    assert stream.sensor_subscription_path != stream.subscription_path

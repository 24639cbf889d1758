"""Two teams: the music tags team's code location (``teams/music_tags``) on top of the media
team's outputs. One workspace, one asset graph across both; chained by the media team's event
output on the real Pub/Sub emulator; one location failing to load leaves the other working."""

import ast
import os
import threading
import time
import uuid

import dagster as dg
import pytest
from dagster_graphql.test.utils import define_out_of_process_workspace, execute_dagster_graphql

import klio_assets
from klio_assets import code_location, media_asset
from klio_assets.builtin.audio import waveform
from klio_assets.settings import Settings
from klio_core.media_store import LocalMediaStore
from klio_core.records import OutputRecord
from klio_core.wire import MediaEvent, encode_event, parse_event
from resources.dagster_tags import INPUT_DATA_VERSION_TAG_PREFIX, RANGE_END_TAG, RANGE_START_TAG
from tests.conftest import materialize_ids, observations, pinged

pytestmark = pytest.mark.slow  # the Pub/Sub emulator, code servers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEAM = os.path.join(ROOT, "teams", "music_tags", "music_tags")
READ_WAVEFORM = ["loudness", "musical_key", "tempo"]
ASSET_NODES = """{ assetNodes { assetKey { path } dependencyKeys { path } isMaterializable
  repository { location { name } } } }"""
LOCATIONS = """{ workspaceOrError { ... on Workspace { locationEntries { name
  locationOrLoadError { __typename ... on PythonError { message causes { message } } } } } } }"""


def test_the_team_imports_only_the_public_api_and_nothing_of_the_media_team():
    for name in os.listdir(TEAM):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(TEAM, name)) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in (
                    "klio_assets", "klio_core", "pipelines", "resources", "sensors", "jobs"):
                assert node.module == "klio_assets", (name, node.module)  # the public API only
                assert {a.name for a in node.names} <= set(klio_assets.__all__), (name, [a.name for a in node.names])
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("klio_assets.") for a in node.names), name


def test_one_workspace_shows_one_graph_across_the_two_locations():
    with dg.instance_for_test() as instance, \
            define_out_of_process_workspace(os.path.join(ROOT, "workspace.yaml"), None, instance) as workspace:
        nodes = execute_dagster_graphql(workspace.create_request_context(), ASSET_NODES).data["assetNodes"]
    by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes if n["isMaterializable"]}
    assert by_key["tempo"]["repository"]["location"]["name"] == "music_tags"
    assert by_key["waveform"]["repository"]["location"]["name"] == "klio_assets"
    assert {"/".join(d["path"]) for d in by_key["notes_summary"]["dependencyKeys"]} == {"note_events", "tempo"}
    assert {"/".join(d["path"]) for d in by_key["tempo"]["dependencyKeys"]} == {"waveform"}


def test_a_team_whose_location_fails_to_load_leaves_the_other_working(tmp_path):
    broken = tmp_path / "broken_tags.py"
    broken.write_text("from klio_assets import code_location, media_asset\n\n\n@media_asset\n"
                      "def tempo(waveformm: bytes) -> bytes:  # a typo: no asset is named so\n    return waveformm\n\n\n"
                      "defs = code_location([tempo], name='music_tags', events_from='klio_assets',\n"
                      "                     from_other_locations=['waveform'])\n")
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text("load_from:\n  - python_module:\n      module_name: klio_assets.definitions\n"
                         "      location_name: klio_assets\n"
                         f"  - python_file:\n      relative_path: {broken}\n      location_name: music_tags\n")
    with dg.instance_for_test() as instance, define_out_of_process_workspace(str(workspace), None, instance) as ws:
        context = ws.create_request_context()
        entries = {e["name"]: e["locationOrLoadError"]
                   for e in execute_dagster_graphql(context, LOCATIONS).data["workspaceOrError"]["locationEntries"]}
        nodes = execute_dagster_graphql(context, ASSET_NODES).data["assetNodes"]
    assert entries["klio_assets"]["__typename"] == "RepositoryLocation"
    error = entries["music_tags"]
    assert error["__typename"] == "PythonError"
    assert "'waveformm'" in " ".join([error["message"], *(c["message"] for c in error["causes"])])
    assert "waveform" in {"/".join(n["assetKey"]["path"]) for n in nodes}


@pytest.fixture
def settings(emulator, monkeypatch, store_root) -> Settings:
    """Both teams' settings, as both code locations read them from one environment."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
    run = uuid.uuid4().hex[:8]  # topics of their own: the emulator lives for the session
    return Settings(data_root=store_root, pubsub_emulator_host=emulator.host, pubsub_topic=f"media-{run}",
                    pubsub_subscription=f"media-{run}-sub", pubsub_output_topic=f"media-{run}-outputs",
                    pubsub_dead_letter_topic=f"media-{run}-dead")


def team_b(settings: Settings) -> dg.Definitions:
    from music_tags.assets import TAGS_ASSETS

    tags = [a for a in TAGS_ASSETS if a.name in READ_WAVEFORM]  # notes_summary needs the transcription model
    return code_location(tags, name="music_tags", events_from="klio_assets", from_other_locations=["waveform"],
                         settings=settings)


def tick(defs: dg.Definitions, instance, cursor=None) -> dg.SensorResult:
    [sensor] = defs.sensors
    return sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources={
        "pubsub": defs.resources["pubsub"], "media_storage": defs.resources["media_storage"]}))


def run(defs: dg.Definitions, request: dg.RunRequest, instance, **kwargs) -> dg.ExecuteInProcessResult:
    """What the daemon runs for ``request`` (its assets, and their checks unless it names none)."""
    [assets] = defs.assets
    selection = dg.AssetSelection.assets(*request.asset_selection)
    return dg.materialize([assets], selection=selection.without_checks() if request.asset_check_keys == [] else selection,
                          tags=request.tags, instance=instance, resources=defs.resources, **kwargs)


def test_the_media_teams_event_output_runs_the_tags_that_read_it(settings, instance, catalogue_ids, store_root):
    media_id = catalogue_ids[0]
    team_a = code_location([waveform], announces=["waveform"], settings=settings)
    tags = team_b(settings)
    tags.resources["pubsub"].ensure_exists()  # its subscription to the media team's event output
    [a_assets] = team_a.assets
    assert materialize_ids([a_assets], [media_id], instance, team_a.resources).success

    result = tick(tags, instance)
    [request] = result.run_requests
    assert sorted(k.to_user_string() for k in request.asset_selection) == READ_WAVEFORM
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == (media_id, media_id)
    assert run(tags, request, instance).success
    store = LocalMediaStore(store_root)
    read = OutputRecord.from_json(store.read_bytes(store.record_uri("waveform", media_id)))
    for asset in READ_WAVEFORM:
        record = OutputRecord.from_json(store.read_bytes(store.record_uri(asset, media_id)))
        assert record.inputs == {"waveform": read.version}, asset  # the version of the media team's output it read
    [tempo] = instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey("tempo"), asset_partitions=[media_id]), limit=1).records
    assert tempo.asset_materialization.tags[INPUT_DATA_VERSION_TAG_PREFIX + "waveform"] == read.version

    # force passes on: the media team's forced run announces a forced event, and the tags recompute
    assert materialize_ids([a_assets], [media_id], instance, team_a.resources, tags={"klio/force": "true"}).success
    result = tick(tags, instance, result.cursor)
    [forced] = result.run_requests
    assert forced.tags.get("klio/force") == "true"
    before = os.stat(store.record_uri("tempo", media_id)).st_mtime_ns
    assert run(tags, forced, instance).success
    assert os.stat(store.record_uri("tempo", media_id)).st_mtime_ns != before

    # freshness crosses the boundary: an unchanged waveform (announced as skipped) leaves the
    # tags as they are; a new code version of it makes them stale, and the next event recomputes
    for bump, recomputed in ((None, False), ("2", True)):
        media_team = [waveform] if bump is None else [media_asset(waveform.fn, code_version=bump)]
        again = code_location(media_team, announces=["waveform"], settings=settings)
        assert materialize_ids([again.assets[0]], [media_id], instance, again.resources).success
        result = tick(tags, instance, result.cursor)
        [request] = result.run_requests
        before = os.stat(store.record_uri("tempo", media_id)).st_mtime_ns
        assert run(tags, request, instance).success
        assert (os.stat(store.record_uri("tempo", media_id)).st_mtime_ns != before) is recomputed, bump
    read = OutputRecord.from_json(store.read_bytes(store.record_uri("waveform", media_id)))
    assert OutputRecord.from_json(store.read_bytes(store.record_uri("tempo", media_id))).inputs == {
        "waveform": read.version}

    # and a ping passes through: the tags record that it reached them, and process nothing
    assert materialize_ids([a_assets], [media_id], instance, team_a.resources, tags={"klio/ping": "true"}).success
    [ping] = tick(tags, instance, result.cursor).run_requests
    assert ping.tags.get("klio/ping") == "true"
    assert run(tags, ping, instance).success
    assert all(media_id in pinged(instance, asset) for asset in READ_WAVEFORM)


def test_in_the_tags_teams_own_stream_too(settings, instance, catalogue_ids, store_root):
    media_id = catalogue_ids[1]
    streaming = settings.model_copy(update={"streaming": True})
    team_a = code_location([waveform], announces=["waveform"], settings=streaming)
    tags = team_b(streaming)
    pubsub = tags.resources["pubsub"]
    pubsub.ensure_exists()
    [a_assets] = team_a.assets
    assert materialize_ids([a_assets], [media_id], instance, team_a.resources).success
    # an announcement of an output that none of the tags reads is taken and dropped, not run
    pubsub.publish(pubsub.topic, [(encode_event(MediaEvent(catalogue_ids[2])), {"asset": "mfcc"})])

    stream_job = tags.resolve_job_def("music_tags_media_stream_job")
    result = stream_job.execute_in_process(instance=instance, resources=tags.resources, run_config={
        "ops": {"media_stream": {"config": {"stop_after_idle_s": 3.0}}}})
    assert result.success
    for asset in READ_WAVEFORM:
        [record] = instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(asset), asset_partitions=[media_id]), limit=1).records
        assert record.run_id == result.run_id, asset  # made in the tags team's own stream run
        assert not instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(asset), asset_partitions=[catalogue_ids[2]]), limit=1).records
    assert not pubsub.pull(10, wait_s=1.0)  # both messages acknowledged


def test_a_bottom_up_event_asks_the_media_team_for_what_is_missing_and_waits_for_it(
        settings, instance, catalogue_ids):
    streaming = settings.model_copy(update={"streaming": True})
    team_a = code_location([waveform], announces=["waveform"], settings=streaming)
    tags = team_b(streaming)
    a_pubsub, b_pubsub = team_a.resources["pubsub"], tags.resources["pubsub"]
    a_pubsub.ensure_exists()
    b_pubsub.ensure_exists()
    media_id, no_source = catalogue_ids[3], "no-such-source"
    b_pubsub.publish(b_pubsub.topic, [(encode_event(MediaEvent(m, recipients=("tempo",))), {})
                                      for m in (media_id, no_source)])
    result: dict = {}
    stream_job = tags.resolve_job_def("music_tags_media_stream_job")
    runner = threading.Thread(target=lambda: result.setdefault("r", stream_job.execute_in_process(
        instance=instance, resources=tags.resources,
        run_config={"ops": {"media_stream": {"config": {"stop_after_idle_s": 3.0}}}})), daemon=True)
    runner.start()

    # the media team is asked for exactly what is missing, and nothing of the tags is made meanwhile
    asked, deadline = [], time.monotonic() + 120
    while len(asked) < 2 and time.monotonic() < deadline:
        for m in a_pubsub.pull(10, wait_s=1.0):
            asked.append(parse_event(m.message.data, {"waveform"}))
            a_pubsub.acknowledge([m.ack_id], a_pubsub.subscription_path)
    assert sorted((e.media_id, e.recipients) for e in asked) == [(media_id, ("waveform",)), (no_source, ("waveform",))]
    assert runner.is_alive() and not materialized(instance, "tempo", media_id)
    # the media team does it, as its sensor or stream would, and announces the outcome of each
    assert materialize_ids([team_a.assets[0]], [media_id, no_source], instance, team_a.resources).success

    runner.join(120)
    assert not runner.is_alive() and result["r"].success
    assert materialized(instance, "tempo", media_id)
    assert not materialized(instance, "loudness", media_id) and not materialized(instance, "musical_key", media_id)
    assert len(instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey("waveform"), asset_partitions=[media_id]), limit=10).records) == 1  # made once
    dropped = observations(instance, "tempo")[no_source]
    assert dropped["status"] == "dropped"
    assert "input 'waveform' was dropped by its code location: source media not found" in dropped["reason"]


def test_on_the_sensor_path_a_bottom_up_event_waits_for_the_media_team_with_no_run(settings, instance, catalogue_ids):
    team_a = code_location([waveform], announces=["waveform"], settings=settings)
    tags = team_b(settings)
    a_pubsub, b_pubsub = team_a.resources["pubsub"], tags.resources["pubsub"]
    a_pubsub.ensure_exists()
    b_pubsub.ensure_exists()
    media_id, no_source = catalogue_ids[0], "no-such-source-either"
    b_pubsub.publish(b_pubsub.topic, [(encode_event(MediaEvent(m, recipients=("tempo",))), {})
                                      for m in (media_id, no_source)])

    held = tick(tags, instance)
    assert not held.run_requests  # nothing runs, no worker waits
    [new] = held.dynamic_partitions_requests  # a partition already, which the daemon adds
    assert sorted(new.partition_keys) == sorted([media_id, no_source])
    instance.add_dynamic_partitions(new.partitions_def_name, list(new.partition_keys))
    asked = a_pubsub.pull(10, wait_s=5.0)
    a_pubsub.acknowledge([m.ack_id for m in asked], a_pubsub.subscription_path)
    assert sorted((e.media_id, e.recipients) for e in (parse_event(m.message.data, {"waveform"}) for m in asked)) == [
        (media_id, ("waveform",)), (no_source, ("waveform",))]
    assert {m.message.attributes["requested_by"] for m in asked} == {"music_tags_pubsub_media_events"}
    # the media team does it, as its own sensor would, and announces the outcome of each ID
    assert materialize_ids([team_a.assets[0]], [media_id, no_source], instance, team_a.resources).success

    answered = tick(tags, instance, held.cursor)
    requests = {r.tags[RANGE_START_TAG]: r for r in answered.run_requests}
    assert sorted(requests) == sorted([media_id, no_source])
    ready, dropped = requests[media_id], requests[no_source]
    assert [k.to_user_string() for k in ready.asset_selection] == ["tempo"] and "klio/upstream_not_made" not in ready.tags
    assert run(tags, ready, instance).success
    assert materialized(instance, "tempo", media_id) and not materialized(instance, "loudness", media_id)
    assert len(instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey("waveform"), asset_partitions=[media_id]), limit=10).records) == 1  # made once

    reason = "input 'waveform' was dropped by its code location: source media not found"
    assert reason in dropped.tags["klio/upstream_not_made"]
    failed = run(tags, dropped, instance, raise_on_error=False)
    assert not failed.success  # so Dagster marks the partition Failed
    assert reason in observations(instance, "tempo")[no_source]["reason"]
    assert not materialized(instance, "tempo", no_source)

    again = tick(tags, instance, answered.cursor)  # acknowledges the answers: nothing comes back
    assert not again.run_requests and not b_pubsub.pull(10, wait_s=1.0) and not a_pubsub.pull(10, wait_s=1.0)


def materialized(instance, asset: str, media_id: str) -> bool:
    return bool(instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey(asset), asset_partitions=[media_id]), limit=1).records)

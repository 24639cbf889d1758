"""Retention on both storages: old runs keep what Dagster's statuses and lineage read, on real runs
of media assets (a recomputed ID, a run whose every output was recomputed, a failed ID)."""

import datetime
import os

import dagster as dg

from jobs.retention import history_retention_job
from klio_assets import build_media_assets, code_location
from klio_assets.builtin.audio import mel_spectrogram, spectrogram, waveform
from klio_assets.settings import Settings
from klio_core.media_ids import PARTITIONS_NAME
from resources.retention import prune_history
from tests.conftest import materialize_ids

FORCE = {"klio/force": "true"}
ASSETS = build_media_assets([waveform, spectrogram, mel_spectrogram])
WAVEFORM = dg.AssetKey("waveform")


def what_the_ui_reads(instance: dg.DagsterInstance) -> dict:
    """Per asset: each partition's status, and its latest materialization (run, storage ID,
    metadata); per check: each partition's latest execution, as the Checks tab reads it. Dagster
    caches the statuses; they are computed again from the events here."""
    instance.wipe_asset_cached_status(list(ASSETS.keys))
    keys = instance.get_dynamic_partitions(PARTITIONS_NAME)
    partitions_def = dg.DynamicPartitionsDefinition(name=PARTITIONS_NAME)
    out: dict = {}
    for asset_key in ASSETS.keys:
        out[asset_key] = instance.get_status_by_partition(asset_key, keys, partitions_def)
        for key in keys:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[key]), limit=1).records
            out[(asset_key, key)] = [(r.run_id, r.storage_id, r.asset_materialization.metadata) for r in records]
    infos = instance.event_log_storage.get_asset_check_partition_info(list(ASSETS.check_keys))
    out["checks"] = sorted(infos, key=lambda i: (i.check_key.to_user_string(), i.partition_key or ""))
    return out


def history_bytes(home: str) -> int:
    return sum(os.path.getsize(os.path.join(folder, name))
               for folder, _, names in os.walk(os.path.join(home, "history")) for name in names)


def test_old_runs_keep_the_latest_records_and_lose_the_rest(home, resources, catalogue_ids):
    a, b, c, d = catalogue_ids
    with dg.DagsterInstance.get() as instance:
        first = materialize_ids([ASSETS], [a, b], instance, resources).run_id
        materialize_ids([ASSETS], [a], instance, resources, tags=FORCE)  # a's outputs are newer now
        superseded = materialize_ids([ASSETS], [c], instance, resources).run_id
        materialize_ids([ASSETS], [c], instance, resources, tags=FORCE)  # ... and all of that run's
        materialize_ids([ASSETS], [a, d], instance, resources)  # its checks' plan is newer than first's, not over b
        failed = materialize_ids([ASSETS], ["no-such-source"], instance, resources, raise_on_error=False)
        assert not failed.success
        before = what_the_ui_reads(instance)
        assert before[WAVEFORM]["no-such-source"] == dg.AssetPartitionStatus.FAILED
        logs_before, bytes_before = len(instance.all_logs(first)), history_bytes(home)
        shard = os.path.join(home, "history", "runs", f"{superseded}.db")

        assert str(prune_history(instance, datetime.timedelta(days=1))).startswith("0 runs deleted, 0 trimmed")
        pruned = prune_history(instance, datetime.timedelta(0), vacuum=True)
        assert (pruned.runs_deleted, pruned.runs_trimmed) == (1, 5), pruned
        assert pruned.events_deleted > 0 and pruned.check_rows_deleted > 0

        assert what_the_ui_reads(instance) == before
        if os.path.exists(os.path.join(home, "history", "runs", "index.db")):  # SQLite: the files shrink
            assert history_bytes(home) < 0.8 * bytes_before, (history_bytes(home), bytes_before)
        assert instance.get_run_by_id(superseded) is None
        assert not os.path.exists(shard)
        assert instance.get_run_by_id(failed.run_id).status == dg.DagsterRunStatus.FAILURE
        kept = instance.all_logs(first)
        assert len(kept) < logs_before / 3, (len(kept), logs_before)
        assert {e.dagster_event_type for e in kept if e.is_dagster_event} <= {
            dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_OBSERVATION,
            dg.DagsterEventType.RUN_START, dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_STARTING,
            dg.DagsterEventType.RUN_ENQUEUED, dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED,
            dg.DagsterEventType.ASSET_CHECK_EVALUATION}
        assert {e.dagster_event.partition for e in kept
                if e.dagster_event_type == dg.DagsterEventType.ASSET_MATERIALIZATION} == {b}

        again = prune_history(instance, datetime.timedelta(0))
        assert (again.runs_deleted, again.events_deleted, again.check_rows_deleted) == (0, 0, 0), again
        assert materialize_ids([ASSETS], [d], instance, resources).success  # the storage goes on
        assert instance.get_status_by_partition(WAVEFORM, [d], dg.DynamicPartitionsDefinition(
            name=PARTITIONS_NAME)) == {d: dg.AssetPartitionStatus.MATERIALIZED}


def test_the_daily_job_prunes_through_dagster(home, resources, catalogue_ids):
    """``history_retention`` as the schedule starts it, on this project's location only."""
    main = code_location([waveform], settings=Settings())
    [schedule] = main.schedules
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    [request] = schedule.evaluate_tick(dg.build_schedule_context()).run_requests
    assert request.run_config["ops"] == {"prune_old_runs": {"config": {"older_than_days": 30.0, "vacuum": False}}}
    assert not code_location([waveform], settings=Settings(retention_days=0)).schedules
    assert not code_location([waveform], name="a_team", settings=Settings()).schedules

    with dg.DagsterInstance.get() as instance:
        old = materialize_ids([ASSETS], [catalogue_ids[0]], instance, resources).run_id
        materialize_ids([ASSETS], [catalogue_ids[0]], instance, resources, tags=FORCE)
        result = history_retention_job.execute_in_process(
            instance=instance, run_config={"ops": {"prune_old_runs": {"config": {"older_than_days": 0}}}})
        [output] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT]
        assert output.step_output_data.metadata["runs_deleted"].value == 1
        assert instance.get_run_by_id(old) is None

"""A check planned over a run's IDs is one row per run (``resources/check_plans.py``); every
reader of a check's state per partition answers as Dagster's own storage does with its row per
partition, over the same runs: a run over a range, an overlapping one, single IDs, a run that
fails half-way, and a range again over an ID checked alone."""

import dagster as dg
import pytest
import yaml

from klio_core.media_ids import InvalidMediaId, validate_media_id
from resources.check_plans import RUN_PLAN, AssetCheckExecutionRecordStatus, PartitionKeyFilter
from resources.dagster_tags import RANGE_END_TAG, RANGE_START_TAG

media = dg.DynamicPartitionsDefinition(name="ids")
CHECK = dg.AssetCheckKey(dg.AssetKey("z"), "z_is_fine")
IDS = [f"id-{i:02d}" for i in range(40)]
RUNS = [("id-00", "id-19"), ("id-10", "id-29"), ("id-05", "id-05"), ("id-30", "id-39"), ("id-17", "id-17"),
        ("id-00", "id-09")]


@dg.multi_asset(specs=[dg.AssetSpec("z", partitions_def=media, skippable=True)], partitions_def=media,
                check_specs=[dg.AssetCheckSpec("z_is_fine", asset="z", partitions_def=media)])
def z_with_checks(context):
    for key in context.partition_keys:
        if key == "id-35":
            raise dg.Failure("id-35 sinks this run")
        yield dg.AssetMaterialization(asset_key="z", partition=key)
        if key.endswith("7"):  # as a media run: an evaluation per ID only when it fails
            yield dg.AssetCheckEvaluation(asset_key=dg.AssetKey("z"), check_name="z_is_fine", partition=key, passed=False)
    yield dg.AssetCheckResult(asset_key="z", check_name="z_is_fine", passed=True)  # the run's summary


def run_all(instance) -> tuple[list[str], list[int]]:
    """The runs of ``RUNS`` on ``instance``: their IDs, and the newest storage ID after each."""
    instance.add_dynamic_partitions("ids", IDS)
    run_ids, after = [], []
    for first, last in RUNS:  # a run of one ID: the summary is that ID's evaluation
        if first == last:
            result = dg.materialize([z_with_checks], instance=instance, raise_on_error=False, partition_key=first)
        else:
            result = dg.materialize([z_with_checks], instance=instance, raise_on_error=False,
                                    tags={RANGE_START_TAG: first, RANGE_END_TAG: last})
        run_ids.append(result.run_id)
        after.append(instance.event_log_storage.get_maximum_record_id())
    return run_ids, after


def answers(instance, run_ids: list[str], after: list[int]) -> dict:
    """What every reader of the check's state says, with runs named by their order (the two
    instances' run IDs differ) and no storage IDs (the two write different check rows)."""
    storage = instance.event_log_storage
    name = {run_id: f"run {n}" for n, run_id in enumerate(run_ids)}

    def record(r):
        return None if r is None else (r.partition, r.status.value, name[r.run_id])

    out: dict = {}
    for key in [*IDS, "id-99"]:
        only = PartitionKeyFilter(key=key)
        pages, cursor, page = [], None, None
        while page != []:  # two at a time, by Dagster's cursor
            page = storage.get_asset_check_execution_history(CHECK, limit=2, cursor=cursor, partition_filter=only)
            pages += [record(r) for r in page]
            cursor = page[-1].id if page else None
        out[key] = {
            "history": [record(r) for r in storage.get_asset_check_execution_history(
                CHECK, limit=100, partition_filter=only)],
            "by pages of two": pages,
            "failed only": [record(r) for r in storage.get_asset_check_execution_history(
                CHECK, limit=100, partition_filter=only, status={AssetCheckExecutionRecordStatus.FAILED})],
            "latest": record(storage.get_latest_asset_check_execution_by_key([CHECK], partition_filter=only).get(CHECK)),
        }
    unpartitioned = PartitionKeyFilter(key=None)
    out["latest of any"] = record(storage.get_latest_asset_check_execution_by_key([CHECK]).get(CHECK))
    out["latest unpartitioned"] = record(storage.get_latest_asset_check_execution_by_key(
        [CHECK], partition_filter=unpartitioned).get(CHECK))
    out["summaries"] = [record(r) for r in storage.get_asset_check_execution_history(
        CHECK, limit=100, partition_filter=unpartitioned)]
    for n, storage_id in [(None, None), *enumerate(after)]:
        out[f"partition info after run {n}"] = sorted([
            (i.partition_key, i.latest_execution_status.value, name[i.latest_planned_run_id],
             i.latest_materialization_storage_id is not None, i.is_current)
            for i in storage.get_asset_check_partition_info([CHECK], after_storage_id=storage_id)], key=str)
    out["partition info of three"] = sorted([
        (i.partition_key, i.latest_execution_status.value, name[i.latest_planned_run_id])
        for i in storage.get_asset_check_partition_info([CHECK], partition_keys=["id-05", "id-17", "id-36"])], key=str)
    state = storage.get_asset_check_state([(CHECK, dg.StaticPartitionsDefinition(IDS))])[CHECK]  # the same keys
    out["status"] = {status.value: sorted(subset.subset_value.get_partition_keys())
                     for status, subset in state.subsets.items()}
    return out


@pytest.fixture
def dagsters_answers(tmp_path_factory, monkeypatch):
    """The answers of Dagster's own SQLite event log over the same runs."""
    home = tmp_path_factory.mktemp("dagster")
    (home / "dagster.yaml").write_text(yaml.safe_dump({"telemetry": {"enabled": False}}))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        return answers(instance, *run_all(instance))


def test_every_reader_answers_per_id_as_dagsters_rows_do(dagsters_answers, home, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", home)
    with dg.DagsterInstance.get() as instance:
        ours = answers(instance, *run_all(instance))
    assert ours == dagsters_answers
    # and the answers are about something: failures, passes left PLANNED, a failed run, a retry
    assert ours["id-07"]["history"] == [("id-07", "FAILED", "run 5"), ("id-07", "FAILED", "run 0")]
    assert ours["id-17"]["history"] == [("id-17", "SUCCEEDED", "run 4"), ("id-17", "FAILED", "run 1"),
                                        ("id-17", "FAILED", "run 0")]
    assert ours["id-12"]["history"] == [("id-12", "PLANNED", "run 1"), ("id-12", "PLANNED", "run 0")]
    assert ours["id-36"]["latest"] == ("id-36", "PLANNED", "run 3")
    assert ours["status"]["EXECUTION_FAILED"] == IDS[30:]
    assert ours["status"]["SUCCEEDED"] == ["id-17"]  # a run of one ID: the summary is its evaluation
    assert ours["id-05"]["history"] == [("id-05", "PLANNED", "run 5"), ("id-05", "SUCCEEDED", "run 2"),
                                        ("id-05", "PLANNED", "run 0")]
    assert "id-12" in ours["status"]["SKIPPED"] and "id-07" not in ours["status"]["SKIPPED"]
    assert ours["id-99"] == {"history": [], "by pages of two": [], "failed only": [], "latest": None}


def check_rows(instance) -> list[tuple[str, str]]:
    with instance.event_log_storage.index_connection() as conn:
        return [tuple(row) for row in conn.exec_driver_sql(
            "SELECT partition, execution_status FROM asset_check_executions ORDER BY id")]


def test_a_run_plans_each_check_in_one_row_that_holds_its_ids(home, monkeypatch):
    """A run over 20 IDs writes one PLANNED row for the check (Dagster: 20), and each evaluation
    of one of its IDs a row of its own; a run of one ID writes the row Dagster writes."""
    monkeypatch.setenv("DAGSTER_HOME", home)
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("ids", IDS)
        dg.materialize([z_with_checks], instance=instance, tags={RANGE_START_TAG: "id-00", RANGE_END_TAG: "id-19"})
        dg.materialize([z_with_checks], instance=instance, partition_key="id-05")
        rows = check_rows(instance)
        [plan] = [r for r in instance.event_log_storage.get_asset_check_execution_history(CHECK, limit=100)
                       if r.status.value == "PLANNED" and r.partition is None]
    assert rows == [(RUN_PLAN, "PLANNED"), ("id-07", "FAILED"), ("id-17", "FAILED"), (None, "SUCCEEDED"),
                    ("id-05", "SUCCEEDED")]  # the one ID's row, planned, then its evaluation (the summary)
    assert sorted(plan.event.get_dagster_event().event_specific_data.partitions_subset.get_partition_keys()) == IDS[:20]


def test_no_media_id_can_be_a_run_plan():
    """The plan row's partition is no media ID's, so no query of Dagster's reads it as one."""
    with pytest.raises(InvalidMediaId, match="partition range"):
        validate_media_id(RUN_PLAN)


def planned_bytes(home, monkeypatch, event_log: dict | None, n: int) -> int:
    """The bytes of the PLANNED rows a run over ``n`` IDs leaves (Dagster's SQLite event log,
    or this project's)."""
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    home.mkdir()
    home.joinpath("dagster.yaml").write_text(yaml.safe_dump(
        {"telemetry": {"enabled": False}, **({"event_log_storage": event_log} if event_log else {})}))
    ids = [f"id-{i:03d}" for i in range(n)]
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("ids", ids)
        dg.materialize([z_with_checks], instance=instance, tags={RANGE_START_TAG: ids[0], RANGE_END_TAG: ids[-1]})
        with instance.event_log_storage.index_connection() as conn:
            return conn.exec_driver_sql("SELECT SUM(LENGTH(evaluation_event)) FROM asset_check_executions "
                                        "WHERE execution_status = 'PLANNED'").scalar_one()


def test_a_check_planned_over_n_ids_stores_bytes_in_proportion_to_n(tmp_path, monkeypatch):
    """Dagster's storage writes a PLANNED row per ID, each holding the planned event with all N
    keys: O(N^2) bytes. Here: one row holding them once."""
    ours = {"module": "resources.sqlite_event_log", "class": "KeptOpenSqliteEventLogStorage"}
    sizes = {(name, n): planned_bytes(tmp_path / f"{name}-{n}", monkeypatch, event_log, n)
             for name, event_log in (("dagster", None), ("ours", ours)) for n in (10, 200)}
    # 20 times the IDs: Dagster's rows hold 59 times the bytes here (8.7 kB to 516 kB), ours 3 times
    assert sizes["dagster", 200] / sizes["dagster", 10] > 40
    assert sizes["ours", 200] / sizes["ours", 10] < 20
    assert sizes["ours", 200] < sizes["dagster", 200] / 100

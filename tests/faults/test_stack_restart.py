"""A full stop and start of ``scripts/dev.sh`` (emulator included): events published before,
during and after it are each processed once, and nothing Dagster recorded is lost."""

import os
import shutil
import time

import dagster as dg
import pytest

from klio_assets.framework.stream import STREAM_TAG
from klio_dev.stack import start_dev_stack, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.faults]

ASSETS = ("waveform", "mel_spectrogram", "mfcc")  # what `klio-publish ID --bottom-up mfcc` runs


def materializations(instance, media_id: str) -> dict[str, int]:
    return {a: len(instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(a), asset_partitions=[media_id]), limit=10).records)
        for a in ASSETS}


def all_materialized(instance, ids) -> bool:
    return all(set(ids) <= set(instance.get_materialized_partitions(dg.AssetKey(a))) for a in ASSETS)


def publish_until_accepted(stack, *args: str, timeout_s: float = 120) -> None:
    """Publish as soon as the emulator (and its topic) is up; the stack may still be starting."""
    deadline = time.monotonic() + timeout_s
    while (published := stack.publish(*args)).returncode != 0:
        assert time.monotonic() < deadline, published.stderr[-2000:]
        time.sleep(1)


@pytest.mark.parametrize("streaming", [False, True], ids=["batch runs", "the media stream"])
def test_events_before_during_and_after_a_restart_are_each_processed_once(tmp_path, monkeypatch, streaming):
    folder = str(tmp_path)
    stack = start_dev_stack(folder, demo_count=1, max_ids_per_run=500, streaming=streaming)
    monkeypatch.setenv("DAGSTER_HOME", stack.env["DAGSTER_HOME"])
    sources = os.path.join(stack.data_root, "sources")
    clip = next(os.path.join(sources, f) for f in os.listdir(sources))
    groups = {name: [f"{name}-{i}" for i in range(2)] for name in ("before", "at-stop", "during", "after")}
    for ids in groups.values():
        for media_id in ids:
            shutil.copy(clip, os.path.join(sources, media_id + os.path.splitext(clip)[1]))
    try:
        publish_until_accepted(stack, *groups["before"], "--bottom-up", "mfcc")
        with dg.DagsterInstance.get() as instance:
            wait_until(lambda: all_materialized(instance, groups["before"]), 300, "the first events", stack.log_path)
            runs_before = {r.run_id for r in instance.get_runs()}
        publish_until_accepted(stack, *groups["at-stop"], "--bottom-up", "mfcc")  # then stop at once
    finally:
        returncode, survivors = stack.stop()
    assert survivors == [], survivors

    stack = start_dev_stack(folder, demo_count=1, max_ids_per_run=500, wait=False, streaming=streaming)
    try:
        publish_until_accepted(stack, *groups["during"], "--bottom-up", "mfcc")  # while Dagster starts
        stack.wait_until_loaded()
        publish_until_accepted(stack, *groups["after"], "--bottom-up", "mfcc")
        everything = [i for ids in groups.values() for i in ids]
        with dg.DagsterInstance.get() as instance:
            wait_until(lambda: all_materialized(instance, everything), 600, "every event's outputs", stack.log_path)
            time.sleep(30)  # two ack deadlines: a duplicate would have been planned and run by now
            # every stream runs on (this project's and the tags team's); the rest finishes: the
            # tags team's stream hands what it dropped to a batch run, whose sensor ticks every 30 s
            unfinished = lambda: [r.run_id for r in instance.get_runs()  # noqa: E731
                                  if not r.is_finished and r.tags.get(STREAM_TAG) != "true"]
            wait_until(lambda: not unfinished(), 300, "the batch runs to finish", stack.log_path)
            runs_after = {r.run_id: r for r in instance.get_runs()}
            assert runs_before <= set(runs_after), "runs recorded before the restart are gone"
            assert set(everything) <= set(instance.get_dynamic_partitions("media_ids"))
            counts = {media_id: materializations(instance, media_id) for media_id in everything}
            wrong = {m: c for m, c in counts.items() if set(c.values()) != {1}}
            assert wrong == {}, f"materializations per asset, by media ID, that are not exactly one: {wrong}"
    finally:
        stack.stop()

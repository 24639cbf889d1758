"""Output records are versioned data, and the records the previous main wrote (format 1, no
``record_version``; ``tests/fixtures/records_from_main``, written by main at a77580d for one clip
through every built-in asset) still count as fresh: upgrading recomputes nothing."""

import shutil
from pathlib import Path

import numpy as np

from klio_assets.builtin import BUILTIN_ASSETS
from klio_core.codecs import NDARRAY
from klio_core.media_store import LocalMediaStore
from klio_core.records import (
    RECORD_VERSION,
    CheckOutcome,
    ItemResult,
    ItemStatus,
    OutputRecord,
    WrittenOutput,
)
from pipelines.items import process_chain

FIXTURE = Path(__file__).parent.parent / "fixtures" / "records_from_main"


def store_with_main_records(tmp_path) -> LocalMediaStore:
    """The fixture's records, with an output file beside each (a fresh output's bytes are not
    read, so they stand in for main's outputs)."""
    root = tmp_path / "root"
    shutil.copytree(FIXTURE, root)
    store = LocalMediaStore(str(root))
    for media in BUILTIN_ASSETS:
        for output in media.outputs:
            Path(store.output_uri(output.asset, "clip-1", output.codec.suffix)).write_bytes(b"")
    return store


def test_records_written_by_the_previous_main_are_fresh(tmp_path):
    store = store_with_main_records(tmp_path)
    tasks = [media.task(None, run_id="after-upgrade") for media in BUILTIN_ASSETS]
    results = process_chain(tasks, store, "clip-1")
    assert [(r.task, r.status) for r in results] == [(t.name, ItemStatus.SKIPPED) for t in tasks]
    written = results[0].outputs["waveform"]
    assert written.written_by_run == "run-from-main" and written.metadata["sample_rate"] == 22050


def test_a_forced_run_rewrites_them_in_the_current_format(tmp_path):
    store = store_with_main_records(tmp_path)
    main_version = OutputRecord.from_json(store.read_bytes(store.record_uri("mfcc", "clip-1"))).version
    mfcc = next(m for m in BUILTIN_ASSETS if m.name == "mfcc")
    # mfcc's input is the stand-in mel spectrogram: give it a real one to read
    store.write_bytes(store.output_uri("mel_spectrogram", "clip-1", ".npy"),
                      NDARRAY.encode(np.ones((128, 11), dtype=np.float32)))
    [result] = process_chain([mfcc.task(None, force=True, run_id="forced")], store, "clip-1")
    assert result.status == ItemStatus.MATERIALIZED, result.reason
    raw = store.read_bytes(store.record_uri("mfcc", "clip-1"))
    assert b'"record_version": %d' % RECORD_VERSION in raw
    record = OutputRecord.from_json(raw)
    assert record.version != main_version and record.run_id == "forced" and record.inputs == {
        "mel_spectrogram": OutputRecord.from_json(store.read_bytes(store.record_uri("mel_spectrogram", "clip-1"))).version}


def test_item_results_round_trip_through_json():
    result = ItemResult("a/b", ItemStatus.MATERIALIZED, outputs={"x": WrittenOutput(
        "/r/x/a/b.npy", "v1", {"shape": [2]}, (CheckOutcome("finite_values", True, "ok"),))}, seconds=0.5, task="x")
    again = ItemResult.from_json(result.to_json())
    assert again == result and isinstance(again.status, ItemStatus)

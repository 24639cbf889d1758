"""One media ID's pass through a chain (``pipelines.items.process_chain``): outputs are written
while the next function computes, the pass returns once they are written, and an output that
cannot be written fails its task and drops what read it."""

import os
import threading

import numpy as np

from klio_core.codecs import NDARRAY
from klio_core.media_store import LocalMediaStore
from klio_core.records import ItemStatus
from pipelines.items import process_chain
from pipelines.specs import ItemInput, ItemOutput, ItemTask
from tests.pipelines.test_transforms import NEXT, TASK


def tripled(numbers: np.ndarray) -> np.ndarray:
    return numbers * 3


TRIPLED = ItemTask("tripled", tripled, (ItemInput("numbers", "numbers", NDARRAY),), (ItemOutput("tripled", NDARRAY),))


def with_input(store: LocalMediaStore) -> LocalMediaStore:
    LocalMediaStore.write_bytes(store, store.output_uri("numbers", "n", ".npy"), NDARRAY.encode(np.array([1, 2])))
    return store


def test_an_output_is_written_while_the_next_function_computes(tmp_path):
    """The write of 'doubled' waits until 'plus_one' has started: a pass that wrote before
    computing on would never get there (the write gives up after a minute and fails the task)."""
    next_started = threading.Event()

    class WaitingStore(LocalMediaStore):
        def write_bytes(self, uri, data):
            if uri == self.output_uri("doubled", "n", ".npy") and not next_started.wait(60):
                raise TimeoutError("the next function never started while 'doubled' was being written")
            super().write_bytes(uri, data)

    def plus_one(doubled: np.ndarray) -> np.ndarray:
        next_started.set()
        return doubled + 1

    store = with_input(WaitingStore(str(tmp_path)))
    signalling = ItemTask("plus_one", plus_one, NEXT.inputs, NEXT.outputs)
    results = process_chain([TASK, signalling], store, "n")
    assert [r.status for r in results] == [ItemStatus.MATERIALIZED] * 2, [r.reason for r in results]
    for asset, value in (("doubled", [2, 4]), ("plus_one", [3, 5])):  # written, with records, on return
        assert NDARRAY.decode(store.read_bytes(store.output_uri(asset, "n", ".npy"))).tolist() == value
        assert os.path.isfile(store.record_uri(asset, "n"))


def test_an_output_that_cannot_be_written_fails_its_task_and_drops_what_read_it(tmp_path):
    class FullDisk(LocalMediaStore):
        def write_bytes(self, uri, data):
            if uri == self.output_uri("doubled", "n", ".npy"):
                raise OSError(28, "No space left on device")
            super().write_bytes(uri, data)

    store = with_input(FullDisk(str(tmp_path)))
    doubled, plus_one, made = process_chain([TASK, NEXT, TRIPLED], store, "n")
    assert (doubled.status, plus_one.status, made.status) == (
        ItemStatus.FAILED, ItemStatus.DROPPED, ItemStatus.MATERIALIZED)
    assert doubled.reason == "could not write 'doubled': OSError: [Errno 28] No space left on device"
    assert plus_one.reason == f"input 'doubled' failed in this pass ({doubled.reason})"
    assert not doubled.outputs and not plus_one.outputs
    assert not os.path.exists(store.record_uri("doubled", "n"))  # nothing says it is fresh
    assert os.path.isfile(store.record_uri("tripled", "n"))

    again = process_chain([TASK, NEXT], LocalMediaStore(str(tmp_path)), "n")  # the disk has room again
    assert [r.status for r in again] == [ItemStatus.MATERIALIZED] * 2  # plus_one's orphan output is stale

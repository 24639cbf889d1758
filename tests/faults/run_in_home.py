"""Materialize media IDs in ONE run against the instance in ``$DAGSTER_HOME``, in a process of its
own, so that a fault test can SIGKILL it mid-write. Usage: ``python -m tests.faults.run_in_home
STORE_ROOT ID ...``."""

import sys

import dagster as dg

from klio_assets import build_media_assets
from klio_assets.builtin.audio import AUDIO_ASSETS
from resources.beam import BeamRunner
from resources.storage import LocalMediaStorage
from tests.conftest import materialize_ids


def main(store_root: str, ids: list[str]) -> int:
    resources = {"media_storage": LocalMediaStorage(root=store_root), "beam_runner": BeamRunner()}
    with dg.DagsterInstance.get() as instance:
        result = materialize_ids([build_media_assets(AUDIO_ASSETS)], ids, instance, resources, raise_on_error=False)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))

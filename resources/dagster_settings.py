"""Dagster settings that only environment variables set, given this project's values by the
instance's event log storages unless the environment sets them: every Dagster process (webserver,
daemon, code servers, runs) builds its event log storage before it reads them.
``deploy/k8s/klio-assets-env.yaml`` sets the same for the pods of Dagster's Helm chart, whose
event log storage is Dagster's own class (docs/deploy.md)."""

import os

DEFAULTS = {
    # Dagster hands a storage a batch of events (a new run's "planned" events) only when this is
    # set; else it stores them one by one.
    "DAGSTER_EVENT_BATCH_SIZE": "1000",
    # After each chunk of runs it creates, the backfill daemon writes the backfill's whole state
    # again (every target ID of every asset, and the runs still to create): 8 times for a
    # 100,000-ID backfill at Dagster's 25, a quarter of the daemon's CPU (py-spy). At 100 the
    # daemon creates those 200 runs with 0.43 s of CPU each instead of 0.51 s (docs/BENCHMARKS.md);
    # it also checks for a cancellation between chunks, so a canceled backfill may create up to
    # 100 more runs, which the daemon then cancels.
    "DAGSTER_ASSET_BACKFILL_RUN_CHUNK_SIZE": "100",
}


def apply_defaults() -> None:
    """Set each of ``DEFAULTS`` that the environment does not set, for this process."""
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)

"""The names of Dagster's own run tags that this project reads or writes. Dagster documents them
(the launchpad sets the range tags to run a range of asset partitions, dagster-io/dagster#10441)
but its public API exports none of them, so they are written here once, and nowhere else
(``tests/test_layers.py`` checks that).

Waiting for: a public partition-range run request (dagster-io/dagster PR #34096,
``RunRequest.for_asset_partition_range``, open), which would make the range tags unnecessary
in the sensor; and exported tag constants for runs filtered by sensor or backfill.
"""

PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
SENSOR_NAME_TAG = "dagster/sensor_name"  # on the runs a sensor requested
BACKFILL_TAG = "dagster/backfill"  # on the runs of a backfill: its ID
RETRY_NUMBER_TAG = "dagster/retry_number"  # on a retry of a failed run
MAX_RETRIES_TAG = "dagster/max_retries"  # a job's own limit of automatic run retries (dagster.yaml's run_retries)

# The tags of an asset materialization that Dagster reads to tell whether a partition is stale
# (its data versions: `AssetMaterialization(tags=...)` accepts exactly these system tags).
CODE_VERSION_TAG = "dagster/code_version"
DATA_VERSION_TAG = "dagster/data_version"
DATA_VERSION_IS_USER_PROVIDED_TAG = "dagster/data_version_is_user_provided"
INPUT_DATA_VERSION_TAG_PREFIX = "dagster/input_data_version/"  # + the upstream asset key
INPUT_EVENT_POINTER_TAG_PREFIX = "dagster/input_event_pointer/"  # + the upstream asset key: its materialization's storage ID
NULL_EVENT_POINTER = "NULL"  # no materialization of the upstream partition is known


def partition_range_tags(first: str, last: str) -> dict[str, str]:
    """The tags of a run over the partitions ``first`` to ``last`` (in the partitions' order)."""
    return {RANGE_START_TAG: first, RANGE_END_TAG: last}

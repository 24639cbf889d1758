import dagster as dg

from klio_assets import build_media_assets
from klio_assets.builtin.audio import AUDIO_ASSETS
from pipelines.graph import asset_graph
from resources.pubsub import PubSubResource
from sensors.pubsub_sensor import build_pubsub_sensor

MEDIA_ASSETS = build_media_assets(AUDIO_ASSETS, max_ids_per_run=2)
SENSOR = build_pubsub_sensor(asset_graph(AUDIO_ASSETS), max_ids_per_run=2, wait_for_events_s=0)


def pull_dead_letters(pubsub: PubSubResource) -> list:
    path = pubsub.subscriber.subscription_path(pubsub.project, f"{pubsub.dead_letter_topic}-sub")
    response = pubsub.subscriber.pull(request={"subscription": path, "max_messages": 100,
                                               "return_immediately": True}, timeout=10)
    return list(response.received_messages)


class Daemon:
    """Records sensor ticks as Dagster's sensor daemon does, then runs the requested runs in-process:
    partitions first, then run requests (skipping run keys already used), then the cursor."""

    def __init__(self, instance, pubsub, resources):
        self.instance, self.pubsub, self.resources = instance, pubsub, resources
        self.cursor: str | None = None
        self.run_keys: set[str] = set()
        self.requests: list[dg.RunRequest] = []

    def evaluate(self) -> dg.SensorResult:
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor,
                                          resources={"pubsub": self.pubsub})
        return SENSOR(context)

    def record(self, result: dg.SensorResult) -> list[dg.RunRequest]:
        for request in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        new = [r for r in result.run_requests or [] if r.run_key not in self.run_keys]
        self.run_keys.update(r.run_key for r in new)
        self.requests.extend(new)
        self.cursor = result.cursor
        return new

    def tick(self) -> list[dg.RunRequest]:
        return self.record(self.evaluate())

    def execute(self, requests: list[dg.RunRequest]) -> list[dg.ExecuteInProcessResult]:
        return [dg.materialize([MEDIA_ASSETS], selection=self.selection(r), tags=r.tags,
                               instance=self.instance, resources=self.resources) for r in requests]

    @staticmethod
    def selection(request: dg.RunRequest) -> dg.AssetSelection:
        """What the daemon runs for ``request``: its assets, with their checks unless it names none."""
        selection = dg.AssetSelection.assets(*request.asset_selection)
        return selection.without_checks() if request.asset_check_keys == [] else selection

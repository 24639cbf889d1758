"""Names of the Beam metrics a media task reports (``pipelines.run`` reads them back per task)."""


def metrics_namespace(task_name: str) -> str:
    return f"klio_assets.{task_name}"


def loads_counter(param: str) -> str:
    """The counter of builds of a task's per-worker value ``param`` (``pipelines.worker_resources``)."""
    return f"{param}_loads"

"""A client of a running Dagster webserver's GraphQL API: the few calls that launching and
following a media backfill needs (``klio-backfill``, ``klio-register --backfill``, the dev stack
the tests and benches start)."""

import time

import requests

from klio_core.media_ids import PARTITIONS_NAME

_MEDIA_ASSETS = """
query MediaAssets {
  assetNodes {
    assetKey { path }
    partitionDefinition { dimensionTypes { dynamicPartitionsDefinitionName } }
  }
}"""

_LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
    ... on PartitionSetNotFoundError { message }
  }
}"""

_STATUS = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status numPartitions runs { runId status tags { key value } } }
    ... on PythonError { message }
  }
}"""

FINISHED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


class WebserverError(RuntimeError):
    pass


class WebserverUnreachable(WebserverError):
    pass


class DagsterWebserver:
    """The few GraphQL calls a media backfill needs."""

    def __init__(self, url: str, timeout_s: float = 30.0):
        self.url = url.rstrip("/") + "/graphql"
        self.timeout_s = timeout_s

    def check_reachable(self, timeout_s: float = 3.0) -> None:
        """Raise ``WebserverUnreachable`` unless a Dagster webserver answers within ``timeout_s``."""
        base = self.url.removesuffix("/graphql")
        try:
            requests.get(base + "/server_info", timeout=timeout_s).raise_for_status()
        except requests.RequestException as e:
            raise WebserverUnreachable(f"no Dagster webserver answers at {base} ({type(e).__name__})") from None

    def query(self, query: str, variables: dict | None = None) -> dict:
        try:
            response = requests.post(self.url, json={"query": query, "variables": variables or {}},
                                     timeout=self.timeout_s)
            response.raise_for_status()
        except requests.RequestException as e:
            raise WebserverUnreachable(f"the Dagster webserver at {self.url} did not answer "
                                       f"({type(e).__name__})") from None
        body = response.json()
        if body.get("errors"):
            raise WebserverError(f"GraphQL errors from {self.url}: {body['errors']}")
        return body["data"]

    def media_asset_keys(self) -> list[list[str]]:
        """Keys of every asset partitioned by ``media_ids``."""
        nodes = self.query(_MEDIA_ASSETS)["assetNodes"]
        return [n["assetKey"]["path"] for n in nodes
                if n["partitionDefinition"] and any(
                    d["dynamicPartitionsDefinitionName"] == PARTITIONS_NAME
                    for d in n["partitionDefinition"]["dimensionTypes"])]

    def launch_backfill(self, asset_keys: list[list[str]], ids: list[str] | None) -> str:
        """Backfill ``ids`` (None: all media IDs) of ``asset_keys``; return the backfill ID."""
        params: dict = {"assetSelection": [{"path": k} for k in asset_keys]}
        if ids is None:
            params["allPartitions"] = True
        else:
            params["partitionNames"] = ids
        result = self.query(_LAUNCH, {"params": params})["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise WebserverError(f"backfill not launched: {result['__typename']}: {result.get('message')}")
        return result["backfillId"]

    def backfill(self, backfill_id: str) -> dict:
        result = self.query(_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        if result["__typename"] != "PartitionBackfill":
            raise WebserverError(f"backfill {backfill_id}: {result.get('message', result['__typename'])}")
        return result

    def wait_for_backfill(self, backfill_id: str, timeout_s: float, poll_s: float = 1.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            backfill = self.backfill(backfill_id)
            if backfill["status"] in FINISHED:
                return backfill
            if time.monotonic() > deadline:
                raise TimeoutError(f"backfill {backfill_id} still {backfill['status']} after {timeout_s} s")
            time.sleep(poll_s)

"""``klio-backfill``: launch a backfill of media IDs on a running Dagster webserver, as the UI does.

    klio-backfill --all                       # every media asset, every media ID
    klio-backfill demo-000-tone demo-001-chord --assets waveform,mfcc
    klio-backfill --file ids.txt --wait       # one ID per line; wait until the backfill ends

It launches an *asset* backfill through the webserver's GraphQL API (the call the UI's
"Materialize" dialog makes), so the assets' backfill policy applies: at most ``max_ids_per_run``
IDs per run, one Beam pipeline per run. Dagster's own ``dagster job backfill`` would
launch one run per ID instead, and ``dagster asset materialize --partition-range`` requires a
single-run policy. The webserver's daemon (``dagster dev`` runs one) launches the runs.
"""

import argparse
import sys
import time

import requests

from klio_core.partitions import media_ids

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


class DagsterWebserver:
    """The few GraphQL calls a media backfill needs."""

    def __init__(self, url: str, timeout_s: float = 30.0):
        self.url = url.rstrip("/") + "/graphql"
        self.timeout_s = timeout_s

    def query(self, query: str, variables: dict | None = None) -> dict:
        response = requests.post(self.url, json={"query": query, "variables": variables or {}},
                                 timeout=self.timeout_s)
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise WebserverError(f"GraphQL errors from {self.url}: {body['errors']}")
        return body["data"]

    def media_asset_keys(self) -> list[list[str]]:
        """Keys of every asset partitioned by ``media_ids``."""
        nodes = self.query(_MEDIA_ASSETS)["assetNodes"]
        return [n["assetKey"]["path"] for n in nodes
                if n["partitionDefinition"] and any(
                    d["dynamicPartitionsDefinitionName"] == media_ids.name
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0].replace("``", ""))
    parser.add_argument("ids", nargs="*", help="media IDs to backfill")
    parser.add_argument("--file", help="a file with one media ID per line")
    parser.add_argument("--all", action="store_true", help="every registered media ID")
    parser.add_argument("--assets", help="comma-separated asset names (default: every media asset)")
    parser.add_argument("--url", default="http://127.0.0.1:3000", help="Dagster webserver URL")
    parser.add_argument("--wait", action="store_true", help="wait for the backfill to finish")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait with --wait")
    args = parser.parse_args(argv)

    ids = list(args.ids)
    if args.file:
        with open(args.file) as f:
            ids += [line.strip() for line in f if line.strip()]
    if args.all == bool(ids):
        parser.error("name media IDs (arguments or --file) or pass --all, not both")

    server = DagsterWebserver(args.url)
    keys = ([[a] for a in args.assets.split(",")] if args.assets else server.media_asset_keys())
    backfill_id = server.launch_backfill(keys, None if args.all else ids)
    print(f"launched backfill {backfill_id} of {'all' if args.all else len(ids)} media IDs "
          f"x {len(keys)} assets")
    if not args.wait:
        return 0
    backfill = server.wait_for_backfill(backfill_id, args.timeout)
    print(f"backfill {backfill_id}: {backfill['status']} in {len(backfill['runs'])} runs")
    return 0 if backfill["status"] in {"COMPLETED", "COMPLETED_SUCCESS"} else 1


if __name__ == "__main__":
    sys.exit(main())

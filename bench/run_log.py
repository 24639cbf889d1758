"""The run page of a large run: ``.venv/bin/python bench/run_log.py [--n 500] [--seconds 1]``.

One run of N noisy clips through every built-in asset (12), in-process, on an instance made by
the project's ``dagster.yaml`` (SQLite). Then ``dagster-webserver`` serves that instance, and
the GraphQL ``logsForRun`` query behind the run page fetches the whole log (median of 3), page
after page of ``PAGE`` events as the run page does, with the fields it shows (message, level,
step, event type, materialization metadata).
Short clips are enough: the log's size depends on the number of IDs and assets, not on the audio.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import records  # noqa: E402  (bench/records.py, beside this file)
import requests  # noqa: E402

from klio_dev import bytecode  # noqa: E402
from klio_dev.pubsub_emulator import free_port  # noqa: E402
from klio_dev.stack import stop_server  # noqa: E402
from resources.dagster_webserver import DagsterWebserver  # noqa: E402

PAGE = 1000

LOGS_FOR_RUN = """query($runId: ID!, $cursor: String, $limit: Int) {
  logsForRun(runId: $runId, afterCursor: $cursor, limit: $limit) {
  __typename
  ... on EventConnection { cursor hasMore events {
    __typename
    ... on MessageEvent { message timestamp level stepKey eventType }
    ... on MaterializationEvent { partition assetKey { path }
      metadataEntries { label __typename ... on TextMetadataEntry { text } ... on PathMetadataEntry { path }
                        ... on MarkdownMetadataEntry { mdStr } ... on IntMetadataEntry { intValue }
                        ... on FloatMetadataEntry { floatValue } } }
    ... on ObservationEvent { partition metadataEntries { label } }
  } } } }"""


def wait_until_serving(url: str, process: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("dagster-webserver exited")
        try:
            if requests.get(url + "/server_info", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise TimeoutError("dagster-webserver did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="media IDs in the run")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each clip")
    args = parser.parse_args()
    print(bytecode.summary())
    with tempfile.TemporaryDirectory(prefix="bench-run-log-") as root, records.project_instance() as (home, instance):
        ids = records.write_noisy_catalogue(os.path.join(root, "sources"), "clip", args.n, args.seconds)
        started = time.perf_counter()
        result = records.run_all(instance, root, ids)
        run_s = time.perf_counter() - started
        assert result.success
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "DAGSTER_HOME": home, "KLIO_DATA_ROOT": root}
        server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "dagster-webserver"),
                                   "-w", os.path.join(ROOT, "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
                                  cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until_serving(url, server)
            graphql = DagsterWebserver(url, timeout_s=300)
            times, events = [], 0
            for _ in range(3):
                t0 = time.perf_counter()
                events, cursor, more = 0, None, True
                while more:
                    log = graphql.query(LOGS_FOR_RUN, {"runId": result.run_id, "cursor": cursor,
                                                       "limit": PAGE})["logsForRun"]
                    events += len(log["events"])
                    cursor, more = log["cursor"], log["hasMore"]
                times.append(time.perf_counter() - t0)
        finally:
            stop_server(server)
    print(f"one run of {args.n} IDs through 12 assets: {run_s:.1f} s in-process\n")
    print("| measure | value | target |\n| --- | --- | --- |")
    print(f"| run page: `logsForRun`, whole log of a {args.n}-ID run ({events} events), median of 3 | "
          f"{statistics.median(times):.2f} s | <= 3 s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

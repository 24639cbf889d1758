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

from resources.dagster_webserver import DagsterWebserver


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

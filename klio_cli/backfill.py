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
import difflib
import sys

from klio_core.media_ids import InvalidMediaId, validate_media_id
from klio_core.stack_file import find_stack
from resources.dagster_webserver import DagsterWebserver, WebserverError


def main(argv: list[str] | None = None) -> int:
    stack = find_stack()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0].replace("``", ""))
    parser.add_argument("ids", nargs="*", help="media IDs to backfill")
    parser.add_argument("--file", help="a file with one media ID per line")
    parser.add_argument("--all", action="store_true", help="every registered media ID")
    parser.add_argument("--assets", help="comma-separated asset names (default: every media asset)")
    parser.add_argument("--url", default=stack.webserver_url,
                        help=f"Dagster webserver URL (default: the running stack's, {stack.webserver_url})")
    parser.add_argument("--wait", action="store_true", help="wait for the backfill to finish")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait with --wait")
    args = parser.parse_args(argv)

    ids = list(args.ids)
    if args.file:
        try:
            with open(args.file) as f:
                ids += [line.strip() for line in f if line.strip()]
        except OSError as e:
            return _refuse(f"cannot read {args.file}: {e.strerror}")
    if args.all == bool(ids):
        parser.error("name media IDs (arguments or --file) or pass --all, not both")
    bad = [f"{m!r}: {reason}" for m in ids if (reason := _invalid(m))]
    if bad:
        return _refuse(f"nothing launched: {len(bad)} of {len(ids)} media IDs are not valid: {'; '.join(bad[:5])}")

    server = DagsterWebserver(args.url)
    try:
        server.check_reachable()
        media_keys = server.media_asset_keys()
        keys = media_keys
        if args.assets:
            known = {key[-1]: key for key in media_keys}
            unknown = [a for a in args.assets.split(",") if a not in known]
            if unknown:
                return _refuse("nothing launched: " + "; ".join(
                    f"no media asset {a!r}{_closest(a, known)}" for a in unknown))
            keys = [known[a] for a in args.assets.split(",")]
        backfill_id = server.launch_backfill(keys, None if args.all else ids)
        print(f"launched backfill {backfill_id} of {'all' if args.all else len(ids)} media IDs "
              f"x {len(keys)} assets on {args.url}")
        if not args.wait:
            return 0
        backfill = server.wait_for_backfill(backfill_id, args.timeout)
    except WebserverError as e:
        return _refuse(f"{e} (start the stack with scripts/dev.sh, or pass --url)")
    print(f"backfill {backfill_id}: {backfill['status']} in {len(backfill['runs'])} runs")
    return 0 if backfill["status"] in {"COMPLETED", "COMPLETED_SUCCESS"} else 1


def _invalid(media_id: str) -> str:
    try:
        validate_media_id(media_id)
    except InvalidMediaId as e:
        return str(e)
    return ""


def _closest(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else f" (media assets: {', '.join(sorted(known))})"


def _refuse(message: str) -> int:
    print(f"klio-backfill: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

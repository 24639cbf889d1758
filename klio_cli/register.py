"""``klio-register``: register a catalogue's media IDs as ``media_ids`` partitions, in batches.

    klio-register --from data/sources                 # every source file under a folder
    klio-register --from gs://bucket/catalogue        # every source object under a prefix
    klio-register --file ids.txt                      # one media ID per line ('#' starts a comment)
    klio-register --from gs://bucket/new --backfill   # and backfill the new ones on the running UI

Klio's batch input, for Dagster: a source is a file (or object) whose name ends with one of the
configured suffixes (``--suffixes``, else ``KLIO_SOURCE_SUFFIXES``, else every format the decoder
reads); its media ID is its path under the folder without the suffix (``label/2024/track-01``).
IDs are checked against the media-ID rule: one named as an argument or in ``--file`` that breaks
it adds nothing and exits 1; a source file whose name breaks it is reported and skipped. ``--from``
must be in the source location (``$KLIO_DATA_ROOT/sources``), where the workers look. New IDs are
added in batches of ``--batch`` with a progress bar, so running it again adds nothing. It ends
with a summary: added, already known, and rejected with their reasons. The instance is the
running stack's (``klio_core.stack_file``), or ``$DAGSTER_HOME``'s.
"""

import argparse
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from tqdm import tqdm

from klio_core.media_ids import PARTITIONS_NAME, InvalidMediaId, validate_media_id
from klio_core.media_store import GCSMediaStore, LocalMediaStore, parse_suffixes
from klio_core.stack_file import dagster_home, find_stack, stack_environ

SHOWN_REJECTIONS = 20


@dataclass
class Registration:
    """What a registration found: IDs to add (in order), IDs already known, and rejected IDs."""

    new: list[str] = field(default_factory=list)
    known: int = 0
    rejected: dict[str, str] = field(default_factory=dict)  # raw ID -> reason


def plan(candidates: Iterable[str], registered: Iterable[str]) -> Registration:
    """Sort ``candidates`` into new, known and rejected, once each, keeping their order."""
    known_ids, seen, out = set(registered), set(), Registration()
    for media_id in candidates:
        if media_id in seen:
            continue
        seen.add(media_id)
        try:
            validate_media_id(media_id)
        except InvalidMediaId as e:
            out.rejected[media_id] = str(e)
            continue
        if media_id in known_ids:
            out.known += 1
        else:
            out.new.append(media_id)
    return out


class OutsideSources(ValueError):
    pass


def sources_under(location: str, source_location: str, suffixes: list[str]) -> Iterable[str]:
    """The media IDs of the sources under ``location``, a local folder or a ``gs://`` prefix in the
    source location (the IDs are paths from there, as the workers look them up)."""
    if location.startswith("gs://") != source_location.startswith("gs://"):
        raise OutsideSources(f"--from {location}: not in the source location {source_location}")
    if location.startswith("gs://"):
        base = source_location.rstrip("/") + "/"
        if not (location.rstrip("/") + "/").startswith(base):
            raise OutsideSources(f"--from {location}: not in the source location {source_location}")
        prefix = location.rstrip("/")[len(base):]
        ids: Iterable[str] = GCSMediaStore(location, location, suffixes).source_ids()
    else:
        if not os.path.isdir(location):
            raise OutsideSources(f"--from {location}: no such folder")
        prefix = os.path.relpath(os.path.realpath(location), os.path.realpath(source_location))
        if prefix == os.pardir or prefix.startswith(os.pardir + os.sep):
            raise OutsideSources(
                f"--from {location}: outside the source location {source_location}, where the workers look "
                "for sources; copy the files there (or set KLIO_DATA_ROOT)")
        prefix = "" if prefix == os.curdir else prefix.replace(os.sep, "/")
        ids = LocalMediaStore(location, location, suffixes).source_ids()
    return (f"{prefix}/{media_id}" if prefix else media_id for media_id in ids)


def add(instance, new: list[str], batch: int) -> None:
    with tqdm(total=len(new), unit="ID", desc="registering", file=sys.stderr, disable=None) as bar:
        for start in range(0, len(new), batch):
            chunk = new[start:start + batch]
            instance.add_dynamic_partitions(PARTITIONS_NAME, chunk)
            bar.update(len(chunk))


def main(argv: list[str] | None = None) -> int:
    stack = find_stack()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0].replace("``", ""))
    parser.add_argument("ids", nargs="*", help="media IDs")
    parser.add_argument("--from", dest="locations", action="append", default=[],
                        help="a folder or gs:// prefix in the source location whose source files name the IDs "
                             "(repeatable)")
    parser.add_argument("--file", help="a file with one media ID per line")
    parser.add_argument("--suffixes", help="source suffixes, comma-separated (default: KLIO_SOURCE_SUFFIXES "
                                           "or every format the decoder reads)")
    parser.add_argument("--batch", type=int, default=1000, help="IDs added per call (default 1000)")
    parser.add_argument("--backfill", action="store_true", help="then backfill the new IDs on the webserver")
    parser.add_argument("--assets", help="with --backfill: comma-separated assets (default: every media asset)")
    parser.add_argument("--url", default=stack.webserver_url,
                        help=f"with --backfill: the webserver URL (default: the running stack's, {stack.webserver_url})")
    args = parser.parse_args(argv)
    if not (args.ids or args.locations or args.file):
        parser.error("name media IDs, --from a folder or gs:// prefix, or --file")
    os.environ.update(stack_environ())  # the running stack's settings, where unset
    home = os.environ.setdefault("DAGSTER_HOME", dagster_home())  # the stack's instance
    if not os.path.isdir(home):
        print(f"klio-register: nothing added: no Dagster home at {home} (start the stack with scripts/dev.sh, or "
              "set DAGSTER_HOME)", file=sys.stderr)
        return 1

    from dagster import DagsterInstance

    from klio_assets.settings import Settings
    from resources.dagster_webserver import DagsterWebserver, WebserverError

    try:
        settings = Settings.from_env()
        suffixes = parse_suffixes(args.suffixes, "--suffixes") if args.suffixes else list(settings.source_suffixes)
    except ValueError as e:
        parser.error(str(e))
    source_location = settings.media_storage().store().source_location
    try:
        located = [list(sources_under(location, source_location, suffixes)) for location in args.locations]
        listed = []
        if args.file:
            with open(args.file, encoding="utf-8") as f:
                listed = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    except (OutsideSources, OSError) as e:
        print(f"klio-register: nothing added: {e}", file=sys.stderr)
        return 1

    named = plan([*args.ids, *listed], ())
    if named.rejected:  # IDs a user wrote: all or nothing (a folder's odd file names are only reported)
        reasons = "; ".join(f"{m!r}: {r}" for m, r in list(named.rejected.items())[:5])
        print(f"klio-register: nothing added: {len(named.rejected)} media IDs are not valid: {reasons}",
              file=sys.stderr)
        return 1
    with DagsterInstance.get() as instance:
        found = plan([*args.ids, *listed, *(m for ids in located for m in ids)],
                     instance.get_dynamic_partitions(PARTITIONS_NAME))
        add(instance, found.new, args.batch)
    print(f"media IDs: {len(found.new)} added, {found.known} already known, {len(found.rejected)} rejected")
    for media_id, reason in list(found.rejected.items())[:SHOWN_REJECTIONS]:
        print(f"  rejected {media_id!r}: {reason}")
    if len(found.rejected) > SHOWN_REJECTIONS:
        print(f"  ... and {len(found.rejected) - SHOWN_REJECTIONS} more")
    if args.backfill and found.new:
        server = DagsterWebserver(args.url)
        try:
            server.check_reachable()
            keys = [[a] for a in args.assets.split(",")] if args.assets else server.media_asset_keys()
            backfill_id = server.launch_backfill(keys, found.new)
        except WebserverError as e:
            print(f"klio-register: the IDs are registered, but no backfill was launched: {e}", file=sys.stderr)
            return 1
        print(f"launched backfill {backfill_id} of {len(found.new)} new media IDs x {len(keys)} assets")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``klio-register``: register a catalogue's media IDs as ``media_ids`` partitions, in batches.

    klio-register --from data/sources                 # every source file under a folder
    klio-register --from gs://bucket/catalogue        # every source object under a prefix
    klio-register --file ids.txt                      # one media ID per line ('#' starts a comment)
    klio-register --from gs://bucket/new --backfill   # and backfill the new ones on the running UI

Klio's batch input, for Dagster: a source is a file (or object) whose name ends with one of the
configured suffixes (``--suffixes``, else ``KLIO_SOURCE_SUFFIXES``, else every format the decoder
reads); its media ID is its path under the folder without the suffix (``label/2024/track-01``).
IDs are checked against the media-ID rule; new ones are added in batches of ``--batch`` with a
progress bar, so running it again adds nothing. It ends with a summary: added, already known, and
rejected with their reasons. The instance is ``$DAGSTER_HOME``'s, as for any Dagster command.
"""

import argparse
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from tqdm import tqdm

from klio_assets.settings import Settings
from klio_core.media_ids import PARTITIONS_NAME, InvalidMediaId, validate_media_id
from klio_core.media_store import GCSMediaStore, LocalMediaStore, parse_suffixes

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


def sources_under(location: str, suffixes: list[str]) -> Iterable[str]:
    """The media IDs of the sources under a local folder or a ``gs://`` prefix."""
    if location.startswith("gs://"):
        return GCSMediaStore(location, location, suffixes).source_ids()
    if not os.path.isdir(location):
        raise FileNotFoundError(f"--from {location}: no such folder")
    return LocalMediaStore(location, location, suffixes).source_ids()


def add(instance, new: list[str], batch: int) -> None:
    with tqdm(total=len(new), unit="ID", desc="registering", file=sys.stderr, disable=None) as bar:
        for start in range(0, len(new), batch):
            chunk = new[start:start + batch]
            instance.add_dynamic_partitions(PARTITIONS_NAME, chunk)
            bar.update(len(chunk))


def main(argv: list[str] | None = None) -> int:
    from dagster import DagsterInstance

    from resources.dagster_webserver import DagsterWebserver

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0].replace("``", ""))
    parser.add_argument("ids", nargs="*", help="media IDs")
    parser.add_argument("--from", dest="locations", action="append", default=[],
                        help="a folder or gs:// prefix whose source files name the IDs (repeatable)")
    parser.add_argument("--file", help="a file with one media ID per line")
    parser.add_argument("--suffixes", help="source suffixes, comma-separated (default: KLIO_SOURCE_SUFFIXES "
                                           "or every format the decoder reads)")
    parser.add_argument("--batch", type=int, default=1000, help="IDs added per call (default 1000)")
    parser.add_argument("--backfill", action="store_true", help="then backfill the new IDs on the webserver")
    parser.add_argument("--assets", help="with --backfill: comma-separated assets (default: every media asset)")
    parser.add_argument("--url", default="http://127.0.0.1:3000", help="with --backfill: the webserver URL")
    args = parser.parse_args(argv)
    if not (args.ids or args.locations or args.file):
        parser.error("name media IDs, --from a folder or gs:// prefix, or --file")
    try:
        suffixes = (parse_suffixes(args.suffixes, "--suffixes") if args.suffixes
                    else list(Settings.from_env().source_suffixes))
    except ValueError as e:
        parser.error(str(e))

    def candidates():
        yield from args.ids
        if args.file:
            with open(args.file, encoding="utf-8") as f:
                yield from (line.strip() for line in f if line.strip() and not line.lstrip().startswith("#"))
        for location in args.locations:
            yield from sources_under(location, suffixes)

    with DagsterInstance.get() as instance:
        found = plan(candidates(), instance.get_dynamic_partitions(PARTITIONS_NAME))
        add(instance, found.new, args.batch)
    print(f"media IDs: {len(found.new)} added, {found.known} already known, {len(found.rejected)} rejected")
    for media_id, reason in list(found.rejected.items())[:SHOWN_REJECTIONS]:
        print(f"  rejected {media_id!r}: {reason}")
    if len(found.rejected) > SHOWN_REJECTIONS:
        print(f"  ... and {len(found.rejected) - SHOWN_REJECTIONS} more")
    if args.backfill and found.new:
        server = DagsterWebserver(args.url)
        keys = [[a] for a in args.assets.split(",")] if args.assets else server.media_asset_keys()
        backfill_id = server.launch_backfill(keys, found.new)
        print(f"launched backfill {backfill_id} of {len(found.new)} new media IDs x {len(keys)} assets")
    return 0


if __name__ == "__main__":
    sys.exit(main())

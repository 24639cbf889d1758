"""``klio-publish``: publish new-content events, like Klio's ``klio message publish``.

    klio-publish track-1 track-2                 # top-down: every asset
    klio-publish --file ids.txt --force          # recompute outputs that exist
    klio-publish track-1 --bottom-up mfcc        # only mfcc and whatever it is missing
    klio-publish track-1 --ping                  # trace the path; process nothing

Without ``--project`` (or ``KLIO_PUBSUB_PROJECT``) it publishes to the local emulator that
``scripts/dev.sh`` starts (``PUBSUB_EMULATOR_HOST``, default 127.0.0.1:8085, project klio-dev).
"""

import argparse
import os
import sys

from klio_assets.settings import DEV_PROJECT, Settings
from klio_core.wire import FORMATS, MediaEvent, encode_event
from resources.pubsub import PubSubResource


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description="Publish media IDs as new-content events.")
    parser.add_argument("ids", nargs="*", help="media IDs")
    parser.add_argument("--file", help="a file with one media ID per line")
    parser.add_argument("--force", action="store_true", help="recompute outputs that already exist")
    parser.add_argument("--ping", action="store_true", help="trace the event through the graph; process nothing")
    parser.add_argument("--bottom-up", action="append", default=[], metavar="ASSET",
                        help="only this asset (and its missing inputs); repeatable")
    parser.add_argument("--format", choices=FORMATS, default="klio", help="message format (default klio)")
    parser.add_argument("--project", default=settings.pubsub_project,
                        help="Google Cloud project (default $KLIO_PUBSUB_PROJECT; else the dev emulator)")
    parser.add_argument("--topic", default=settings.pubsub_topic,
                        help=f"topic (default $KLIO_PUBSUB_TOPIC or {settings.pubsub_topic})")
    args = parser.parse_args(argv)

    ids = list(args.ids)
    if args.file:
        with open(args.file) as f:
            ids += [line.strip() for line in f if line.strip()]
    if not ids:
        parser.error("name at least one media ID (arguments or --file)")
    project = args.project
    if not project:
        project = DEV_PROJECT
        os.environ.setdefault("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{settings.pubsub_emulator_port}")
    events = [MediaEvent(i, args.force, args.ping, tuple(args.bottom_up)) for i in ids]
    try:
        bodies = [encode_event(e, args.format) for e in events]
    except ValueError as e:
        parser.error(str(e))
    message_ids = PubSubResource(project=project, topic=args.topic).publish(args.topic, [(b, {}) for b in bodies])
    where = os.environ.get("PUBSUB_EMULATOR_HOST") or "Pub/Sub"
    print(f"published {len(message_ids)} events to projects/{project}/topics/{args.topic} ({where})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

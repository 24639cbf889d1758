"""``klio-publish``: publish new-content events, like Klio's ``klio message publish``.

    klio-publish track-1 track-2                 # top-down: every asset
    klio-publish --file ids.txt --force          # recompute outputs that exist
    klio-publish track-1 --bottom-up mfcc        # only mfcc and whatever it is missing
    klio-publish track-1 --ping                  # trace the path; process nothing

It publishes to the stack ``klio-dev`` runs (``klio_core.stack_file``: its emulator, found with
nothing exported), or to ``--project`` / ``KLIO_PUBSUB_PROJECT``. Every media ID is checked
first: one that is not valid, or a stack that does not answer, publishes nothing and exits
non-zero with one line saying why.

It loads only the wire format and Google's Pub/Sub client (no Dagster, Beam or librosa), so it
takes about as long as importing that client (docs/BENCHMARKS.md, bench/cli.py).
"""

import argparse
import os
import socket
import sys

from klio_core.media_ids import InvalidMediaId, validate_media_id
from klio_core.stack_file import find_stack
from klio_core.wire import FORMATS, MediaEvent, encode_event

REACH_TIMEOUT_S = 3.0
PUBLISH_TIMEOUT_S = 30.0


class Refused(Exception):
    """An expected failure: printed as one line, exit code 1."""


def main(argv: list[str] | None = None) -> int:
    stack = find_stack()
    parser = argparse.ArgumentParser(description="Publish media IDs as new-content events.")
    parser.add_argument("ids", nargs="*", help="media IDs")
    parser.add_argument("--file", help="a file with one media ID per line")
    parser.add_argument("--force", action="store_true", help="recompute outputs that already exist")
    parser.add_argument("--ping", action="store_true", help="trace the event through the graph; process nothing")
    parser.add_argument("--bottom-up", action="append", default=[], metavar="ASSET",
                        help="only this asset (and its missing inputs); repeatable")
    parser.add_argument("--format", choices=FORMATS, default="klio", help="message format (default klio)")
    parser.add_argument("--project", help="a Google Cloud project (default $KLIO_PUBSUB_PROJECT; else the stack's "
                                          "emulator)")
    parser.add_argument("--topic", default=stack.pubsub_topic, help=f"topic (default {stack.pubsub_topic})")
    args = parser.parse_args(argv)
    try:
        ids = _media_ids(args.ids, args.file)
        if not ids:
            parser.error("name at least one media ID (arguments or --file)")
        project = args.project or stack.pubsub_project
        emulator = None if args.project else stack.pubsub_emulator_host
        bodies = _encode(ids, args)
        if emulator:
            _reachable(emulator, stack)
        published = _publish(project or stack.project, emulator, args.topic, bodies)
    except Refused as e:
        print(f"klio-publish: {e}", file=sys.stderr)
        return 1
    print(f"published {published} events to projects/{project or stack.project}/topics/{args.topic} "
          f"({f'emulator {emulator}' if emulator else 'Pub/Sub'})")
    return 0


def _media_ids(given: list[str], path: str | None) -> list[str]:
    ids = list(given)
    if path:
        try:
            with open(path) as f:
                ids += [line.strip() for line in f if line.strip()]
        except OSError as e:
            raise Refused(f"cannot read {path}: {e.strerror}") from None
    return ids


def _encode(ids: list[str], args) -> list[bytes]:
    bad = []
    for media_id in ids:
        try:
            validate_media_id(media_id)
        except InvalidMediaId as e:
            bad.append(f"{media_id!r}: {e}")
    if bad:
        raise Refused(f"nothing published: {len(bad)} of {len(ids)} media IDs are not valid: " + "; ".join(bad[:5])
                      + ("; ..." if len(bad) > 5 else ""))
    return [encode_event(MediaEvent(i, args.force, args.ping, tuple(args.bottom_up)), args.format) for i in ids]


def _reachable(host: str, stack) -> None:
    """Refuse at once, rather than wait out the client's retries, when no emulator answers."""
    name, _, port = host.rpartition(":")
    try:
        socket.create_connection((name or "127.0.0.1", int(port)), timeout=REACH_TIMEOUT_S).close()
    except (OSError, ValueError):
        raise Refused(f"nothing published: no Pub/Sub emulator answers at {host} ({stack.describe()}); start the "
                      "stack with scripts/dev.sh, or name a project with --project") from None


def _publish(project: str, emulator: str | None, topic: str, bodies: list[bytes]) -> int:
    if emulator:
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator  # how Google's client finds an emulator
    from google.api_core.exceptions import GoogleAPICallError, RetryError
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    publisher = pubsub_v1.PublisherClient()
    path = publisher.topic_path(project, topic)
    try:
        futures = [publisher.publish(path, body) for body in bodies]
        for future in futures:
            future.result(timeout=PUBLISH_TIMEOUT_S)
    except (GoogleAPICallError, RetryError, TimeoutError) as e:
        raise Refused(f"publishing to {path} failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    return len(futures)


if __name__ == "__main__":
    sys.exit(main())

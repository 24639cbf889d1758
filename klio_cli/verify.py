"""``klio-verify``: is everything this deployment needs there, and reachable with the current
credentials? Klio's ``klio job verify``, for the settings of the code location
(``klio_assets.settings``: ``KLIO_PUBSUB_*``, ``KLIO_DATA_ROOT``, and the emulators'
``PUBSUB_EMULATOR_HOST`` / ``STORAGE_EMULATOR_HOST``).

    klio-verify             # print each resource and its state; exit 1 if any is missing or failing
    klio-verify --create    # create what is missing (topics, subscription, bucket, folders), then check again

Checked: the input topic, the sensor's subscription (and that it is on the input topic), the
dead-letter and output topics, the storage root (a folder, or a gs:// bucket) and the source
location. Pub/Sub is checked only when it is configured (a project or an emulator), as the
sensor runs only then.
"""

import argparse
import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from klio_core.stack_file import stack_environ

OK, MISSING, FAILING = "ok", "missing", "failing"


@dataclass
class Finding:
    what: str
    name: str
    state: str
    detail: str = ""
    create: Callable[[], object] | None = None


def _check(what: str, name: str, probe: Callable[[], str], create: Callable[[], object] | None) -> Finding:
    """``probe()`` returns "" when the resource is right, a problem otherwise, and raises
    ``google.api_core.exceptions.NotFound`` (or ``FileNotFoundError``) when it is missing."""
    from google.api_core.exceptions import NotFound

    try:
        problem = probe()
    except (NotFound, FileNotFoundError):
        return Finding(what, name, MISSING, "does not exist", create)
    except Exception as e:  # unreachable, no permission, bad credentials: say which
        return Finding(what, name, FAILING, f"{type(e).__name__}: {e}".splitlines()[0][:300])
    return Finding(what, name, FAILING if problem else OK, problem)


def _found(_resource) -> str:
    return ""  # the call returned: it exists


def pubsub_findings(pubsub) -> list[Finding]:
    findings = []
    topics = [("input topic", pubsub.topic), ("dead-letter topic", pubsub.dead_letter_topic),
              ("output topic", pubsub.output_topic)]

    def topic_found(path: str) -> str:
        return _found(pubsub.publisher.get_topic(request={"topic": path}))

    def create_topic(path: str) -> object:
        return pubsub.publisher.create_topic(request={"name": path})

    for what, topic in topics:
        if topic:
            path = pubsub.topic_path(topic)
            findings.append(_check(what, path, functools.partial(topic_found, path), functools.partial(create_topic, path)))

    def subscription() -> str:
        found = pubsub.subscriber.get_subscription(request={"subscription": pubsub.subscription_path})
        expected = pubsub.topic_path(pubsub.topic)
        return "" if found.topic == expected else f"is on {found.topic}, not on the input topic {expected}"

    findings.append(_check("subscription", pubsub.subscription_path, subscription, lambda: pubsub.ensure_exists()))
    return findings


def storage_findings(root: str, source_location: str) -> list[Finding]:
    if root.startswith("gs://"):
        return [_bucket_finding(root)]
    findings = []
    for what, folder in (("storage root", root), ("source location", source_location)):
        def probe(folder=folder) -> str:
            if not os.path.isdir(folder):
                raise FileNotFoundError(folder)
            return "" if os.access(folder, os.W_OK | os.R_OK) else "not readable and writable by this user"

        findings.append(_check(what, folder, probe, functools.partial(os.makedirs, folder, exist_ok=True)))
    return findings


def _bucket_finding(root: str) -> Finding:
    from google.api_core.exceptions import NotFound

    from klio_core.media_store import gcs_client

    client = gcs_client()
    bucket = root[len("gs://"):].split("/")[0]

    def probe() -> str:
        if client.lookup_bucket(bucket) is None:
            raise NotFound(f"bucket {bucket}")
        return ""

    return _check("storage bucket", f"gs://{bucket}", probe, lambda: _found(client.create_bucket(bucket)))


def findings(settings) -> list[Finding]:
    store = settings.media_storage().store()
    found = storage_findings(store.root, store.source_location)
    if settings.pubsub_configured:
        found += pubsub_findings(settings.pubsub())
    return found


def print_findings(found: list[Finding]) -> None:
    width = max(len(f.what) for f in found)
    for f in found:
        print(f"{f.state:8} {f.what:{width}}  {f.name}{f'  ({f.detail})' if f.detail else ''}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--create", action="store_true", help="create what is missing, then check again")
    args = parser.parse_args(argv)
    from klio_assets.settings import Settings

    os.environ.update(stack_environ())  # the running stack's, where unset (Google's clients read os.environ)
    settings = Settings.from_env()
    found = findings(settings)
    print_findings(found)
    if args.create and any(f.state == MISSING for f in found):
        for f in found:
            if f.state == MISSING and f.create is not None:
                f.create()
                print(f"created  {f.what}: {f.name}")
        found = findings(settings)
        print_findings(found)
    if not settings.pubsub_configured:
        print("Pub/Sub not checked: no running stack (klio-dev), KLIO_PUBSUB_PROJECT or PUBSUB_EMULATOR_HOST, so "
              "the sensor is off")
    bad = [f for f in found if f.state != OK]
    print(f"{len(found) - len(bad)} of {len(found)} ok" + (f"; {len(bad)} missing or failing" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

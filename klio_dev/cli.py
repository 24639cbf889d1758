"""``klio-dev``: the local stack behind ``scripts/dev.sh``.

Writes the demo catalogue and registers it; serves the data folder read-only over HTTP (port
``KLIO_MEDIA_PORT``, default 3001) so that the UI shows the plots from media storage; unless
``KLIO_PUBSUB_PROJECT`` names a real project, starts the Pub/Sub emulator (port
``KLIO_PUBSUB_EMULATOR_PORT``, default 8085) and creates the topics and subscription; unless a
Beam runner is configured, starts warm Beam workers (``KLIO_DEV_WORKERS``, default one per core;
``klio_dev.local_workers``) and points the runs and the media stream at them; then runs ``dagster
dev`` with the given arguments and stops the workers and the emulator when it exits. New content
goes through the media stream (``KLIO_STREAMING``, default true here; false: a batch run per
sensor tick).

The emulator keeps nothing on disk: a new one starts empty. So that a restart of the stack loses
no event, ``klio-dev`` carries the messages still on the input subscription (published but not
yet acknowledged, whether the sensor saw them or not) over to the next emulator: on stop it
drains them into ``$DAGSTER_HOME/pubsub-carry-over.jsonl``, waiting out the ack deadline
(15 s here) for those a tick had pulled, and on start it publishes them again, each with the key
it had (attribute ``klio_origin_key``), so that the sensor still recognises the ones it already
recorded.
"""

import base64
import contextlib
import functools
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading

CARRY_OVER_FILE = "pubsub-carry-over.jsonl"
SUPERSEDED_DEV = "ignore:Function `dev_command` is superseded"
"""A warning filter for the one line ``dagster dev`` prints at every start, that ``dg dev``
(the dagster-dg-cli package, not a dependency here) supersedes it. ``dagster dev`` is still
Dagster's documented local command for a workspace file."""
DEV_ACK_DEADLINE_S = 15
"""The local subscription's ack deadline: short, so that on stop the messages a sensor tick pulled
but never saw recorded (the daemon died mid-tick) come back in time to be carried over."""


USAGE = """usage: klio-dev [dagster dev's options, e.g. -p 3100]

The local stack (scripts/dev.sh runs it): the demo catalogue, the media file server, the Pub/Sub
emulator, warm Beam workers and `dagster dev`, which takes every argument given. Its ports are
settings: the webserver's -p (default 3000), KLIO_MEDIA_PORT (3001), KLIO_PUBSUB_EMULATOR_PORT
(8085); a taken one is refused. The commands (klio-publish, klio-backfill, ...) find the stack
in $DAGSTER_HOME/klio-stack.json. Ctrl-C or SIGTERM stops it all."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("--help", "-?"):
        print(USAGE)
        return 0

    from dagster import DagsterInstance

    from klio_assets.settings import Settings
    from klio_dev.demo import register, write_catalogue
    from resources.beam import BeamRunner

    # Ctrl-C and SIGTERM stop the stack cleanly (workers, emulator, carried-over messages) even
    # when this process was started with SIGINT ignored, as a shell starts a background job.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminated)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.environ.setdefault("KLIO_STREAMING", "true")  # the dev stack streams, unless told otherwise
    settings = Settings.from_env()
    home, data_root = os.environ["DAGSTER_HOME"], settings.data_root
    host, port = webserver_address(argv)
    taken = taken_ports({"the webserver's (-p/--port)": port,
                         "KLIO_MEDIA_PORT": None if settings.media_url else settings.media_port,
                         "KLIO_PUBSUB_EMULATOR_PORT": None if settings.pubsub_project else settings.pubsub_emulator_port})
    if taken:
        print(f"klio-dev: port {taken[1]} is taken ({taken[0]}): stop what holds it or set {taken[0]} to a free "
              "port", file=sys.stderr)
        return 2

    ids = write_catalogue(os.path.join(data_root, "sources"), settings.demo_count, 3.0)
    with DagsterInstance.get() as instance:
        added = register(instance, ids)
    print(f"demo catalogue: {len(ids)} clips in {data_root}/sources ({len(added)} newly registered)")

    env = dict(os.environ)
    if not settings.media_url:
        media_port = settings.media_port
        try:
            serve_folder(data_root, media_port)
            env["KLIO_MEDIA_URL"] = f"http://127.0.0.1:{media_port}"
            print(f"media storage served read-only at {env['KLIO_MEDIA_URL']}")
        except OSError as e:
            print(f"could not serve media storage on port {media_port} ({e}): the UI links outputs by "
                  "path only; set KLIO_MEDIA_PORT to a free port", file=sys.stderr)
    workers: contextlib.AbstractContextManager[str | None] = contextlib.nullcontext()
    if settings.dev_workers > 0 and settings.beam_runner == BeamRunner():  # no runner configured
        from klio_assets.definitions import MEDIA_ASSETS  # only here: the import costs 2 s
        from klio_dev.local_workers import local_workers, warm_up

        workers = local_workers(settings.dev_workers, functools.partial(warm_up, MEDIA_ASSETS))
    with workers as address:
        if address:
            env.update(KLIO_BEAM_RUNNER="DaskRunner", KLIO_DASK_CLIENT_ADDRESS=address)
            print(f"{settings.dev_workers} warm Beam worker(s) at {address} run the media work")
        workspace = os.path.abspath(settings.workspace or os.path.join(root, "workspace.yaml"))
        return _run_with_pubsub(settings, env, home, workspace, argv, f"http://{host}:{port}")


def other_locations_pubsub(workspace: str) -> list:
    """The Pub/Sub resource of every code location of the ``workspace`` file but this project's
    own (their subscriptions to its event output must exist before it publishes)."""
    import importlib

    import yaml

    with open(workspace) as f:
        entries = yaml.safe_load(f)["load_from"]
    modules = [e["python_module"]["module_name"] for e in entries if "python_module" in e]
    return [importlib.import_module(m).defs.resources["pubsub"] for m in modules if m != "klio_assets.definitions"]


def _run_with_pubsub(settings, env: dict, home: str, workspace: str, argv: list[str], webserver_url: str) -> int:
    from klio_core.stack_file import DEV_PROJECT, Stack, remove_stack, write_stack
    from klio_dev.pubsub_emulator import PubSubEmulator

    emulator = None
    if not settings.pubsub_project:
        emulator = PubSubEmulator(project=DEV_PROJECT, port=settings.pubsub_emulator_port).start()
        env.update(PUBSUB_EMULATOR_HOST=emulator.host, KLIO_PUBSUB_PROJECT=DEV_PROJECT,
                   KLIO_PUBSUB_ACK_DEADLINE_S=str(DEV_ACK_DEADLINE_S))
        os.environ.update(PUBSUB_EMULATOR_HOST=emulator.host)  # for ensure_exists below, this process only
        print(f"Pub/Sub emulator on {emulator.host}, project {DEV_PROJECT}")
    carry_over = os.path.join(home, CARRY_OVER_FILE)
    pubsub = None
    try:
        if emulator is not None:
            pubsub = settings.pubsub(ack_deadline_s=DEV_ACK_DEADLINE_S)
            pubsub.ensure_exists()
            for other in other_locations_pubsub(workspace):  # before anything is published to their inputs
                other.model_copy(update={"ack_deadline_seconds": DEV_ACK_DEADLINE_S}).ensure_exists()
            restored = restore_messages(pubsub, carry_over)
            if restored:
                print(f"Pub/Sub: {restored} message(s) carried over from the last emulator")
            print("publish events with: klio-publish <media_id> ...")
        stack_file = write_stack(home, Stack(
            webserver_url=webserver_url, pubsub_project=settings.pubsub_project,
            pubsub_emulator_host=emulator.host if emulator else None, pubsub_topic=settings.pubsub_topic,
            data_root=os.path.abspath(settings.data_root)))
        print(f"the commands (klio-publish, klio-backfill, ...) find this stack in {stack_file}")
        # Start from DAGSTER_HOME: dagster warns about a dagster.yaml in the working folder that is
        # not DAGSTER_HOME's, and the repository root holds one. dagster dev starts with SIGINT and
        # SIGTERM as by default, however this process was started: main() handles both, and a
        # handled signal is reset at exec (only an ignored one would be inherited).
        dagster = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "dagster"), "dev",
             "-w", workspace, *argv], cwd=home,
            env={**env, "PYTHONWARNINGS": ",".join(filter(None, [env.get("PYTHONWARNINGS"), SUPERSEDED_DEV]))})
        try:
            return dagster.wait()
        except KeyboardInterrupt:  # Ctrl-C reached dagster dev too (one process group): let it stop
            return _stop(dagster, already_told_s=30.0)
        except SystemExit:  # SIGTERM, to this process alone
            return _stop(dagster)
    finally:
        remove_stack(home)
        if emulator is not None:
            try:
                saved = save_messages(pubsub, carry_over) if pubsub is not None else 0
                if saved:
                    print(f"Pub/Sub: {saved} message(s) not yet acknowledged, kept in {carry_over}")
            finally:
                emulator.stop()


def webserver_address(argv: list[str]) -> tuple[str, int]:
    """The host and port ``dagster dev`` serves on, from its arguments (its defaults otherwise)."""
    host, port = "127.0.0.1", 3000
    for i, arg in enumerate(argv):
        name, _, value = arg.partition("=")
        if not value and i + 1 < len(argv):
            value = argv[i + 1]
        if name in ("-p", "--port", "--dagit-port"):
            port = int(value)
        elif name in ("-h", "--host", "--dagit-host"):
            host = value
    return host, port


def taken_ports(ports: dict[str, int | None]) -> tuple[str, int] | None:
    """The first (setting, port) of ``ports`` that something on this machine listens on."""
    for setting, port in ports.items():
        if port is None:
            continue
        with socket.socket() as probe:
            probe.settimeout(1.0)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return setting, port
    return None


def _stop(dagster: subprocess.Popen, grace_s: float = 20.0, already_told_s: float = 0.0) -> int:
    """Stop ``dagster dev`` (and with it the daemon, webserver and runs): after ``already_told_s``
    (it got the same Ctrl-C, and a second SIGINT during its shutdown would abort it), SIGINT, as
    Ctrl-C sends it, then SIGKILL if it has not stopped within ``grace_s``."""
    if already_told_s:
        try:
            return dagster.wait(already_told_s)
        except subprocess.TimeoutExpired:
            pass  # the SIGINT reached this process alone
    if dagster.poll() is None:
        dagster.send_signal(signal.SIGINT)
    try:
        return dagster.wait(grace_s)
    except subprocess.TimeoutExpired:
        dagster.kill()
        return dagster.wait()


def _terminated(signum, frame) -> None:
    raise SystemExit(128 + signum)


class _QuietFileHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # one line per plot viewed would drown dagster's output
        pass


def serve_folder(folder: str, port: int) -> http.server.ThreadingHTTPServer:
    """Serve ``folder`` read-only on 127.0.0.1:``port`` from a daemon thread (GET and HEAD only)."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", port), functools.partial(_QuietFileHandler, directory=os.path.abspath(folder)))
    threading.Thread(target=server.serve_forever, name="media-files", daemon=True).start()
    return server


def save_messages(pubsub, path: str) -> int:
    """Drain the input subscription into ``path`` (JSON lines, after any still there from a start
    that failed to restore them); how many messages were saved."""
    messages = pubsub.drain(wait_s=pubsub.ack_deadline_seconds + 2)
    if messages:
        kept = open(path).read() if os.path.exists(path) else ""
        with open(path + ".tmp", "w") as f:
            f.write(kept)
            for data, attributes in messages:
                f.write(json.dumps({"data": base64.b64encode(data).decode("ascii"), "attributes": attributes}) + "\n")
        os.replace(path + ".tmp", path)
    return len(messages)


def restore_messages(pubsub, path: str) -> int:
    """Publish the messages saved in ``path`` to the input topic, then remove it; how many."""
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        messages = [(base64.b64decode(m["data"]), m["attributes"]) for m in map(json.loads, f)]
    pubsub.publish(pubsub.topic, messages)
    os.remove(path)
    return len(messages)


if __name__ == "__main__":
    sys.exit(main())

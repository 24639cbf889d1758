"""``klio-dev``: the local stack behind ``scripts/dev.sh``.

Writes the demo catalogue and registers it; unless ``KLIO_PUBSUB_PROJECT`` names a real
project, starts the Pub/Sub emulator (port ``KLIO_PUBSUB_EMULATOR_PORT``, default 8085) and
creates the topics and subscription; then runs ``dagster dev`` with the given arguments and
stops the emulator when it exits.
"""

import os
import subprocess
import sys

DEV_PROJECT = "klio-dev"
DEV_EMULATOR_PORT = 8085


def main(argv: list[str] | None = None) -> int:
    from dagster import DagsterInstance

    from klio_assets.demo import register, write_catalogue
    from resources.pubsub import PubSubResource
    from resources.pubsub_emulator import PubSubEmulator

    argv = sys.argv[1:] if argv is None else argv
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    home, data_root = os.environ["DAGSTER_HOME"], os.environ["KLIO_DATA_ROOT"]

    ids = write_catalogue(os.path.join(data_root, "sources"), int(os.environ.get("KLIO_DEMO_COUNT", "12")), 3.0)
    with DagsterInstance.get() as instance:
        added = register(instance, ids)
    print(f"demo catalogue: {len(ids)} clips in {data_root}/sources ({len(added)} newly registered)")

    env = dict(os.environ)
    emulator = None
    if not env.get("KLIO_PUBSUB_PROJECT"):
        port = int(env.get("KLIO_PUBSUB_EMULATOR_PORT", DEV_EMULATOR_PORT))
        emulator = PubSubEmulator(project=DEV_PROJECT, port=port).start()
        env.update(PUBSUB_EMULATOR_HOST=emulator.host, KLIO_PUBSUB_PROJECT=DEV_PROJECT)
        os.environ.update(PUBSUB_EMULATOR_HOST=emulator.host)  # for ensure_exists below, this process only
        print(f"Pub/Sub emulator on {emulator.host}, project {DEV_PROJECT}")
    try:
        if emulator is not None:
            PubSubResource(
                project=DEV_PROJECT,
                topic=env.get("KLIO_PUBSUB_TOPIC", "klio-media-events"),
                subscription=env.get("KLIO_PUBSUB_SUBSCRIPTION", "klio-media-events-dagster"),
                dead_letter_topic=env.get("KLIO_PUBSUB_DEAD_LETTER_TOPIC", "klio-media-events-dead-letter"),
                output_topic=env.get("KLIO_PUBSUB_OUTPUT_TOPIC", "klio-media-outputs"),
            ).ensure_exists()
            print("publish events with: klio-publish <media_id> ...")
        # Start from DAGSTER_HOME: dagster warns about a dagster.yaml in the working folder that is
        # not DAGSTER_HOME's, and the repository root holds one.
        dagster = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "dagster"), "dev",
             "-w", os.path.join(root, "workspace.yaml"), *argv], cwd=home, env=env)
        try:
            return dagster.wait()
        except KeyboardInterrupt:  # Ctrl-C reached dagster dev too; let it shut down
            return dagster.wait()
    finally:
        if emulator is not None:
            emulator.stop()


if __name__ == "__main__":
    sys.exit(main())

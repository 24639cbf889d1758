"""A throwaway PostgreSQL server on a free port (Debian's packages; ``scripts/test.sh`` installs them)."""

import glob
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager

from klio_dev.pubsub_emulator import free_port


@contextmanager
def throwaway_postgres():
    """Start a server with a ``dagster`` database; yield its SQLAlchemy URL; stop and delete it."""
    initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    assert initdb, "PostgreSQL is missing: scripts/test.sh installs it (apt-get install postgresql)"
    bindir, port = os.path.dirname(initdb[-1]), free_port()
    data = tempfile.mkdtemp(prefix="klio-pg-")
    shutil.chown(data, "postgres", "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_postgres, f"{bindir}/initdb", "-D", f"{data}/db", "-U", "postgres", "--auth=trust"],
                   check=True, capture_output=True)
    subprocess.run([*as_postgres, f"{bindir}/pg_ctl", "-D", f"{data}/db", "-l", f"{data}/log", "-w", "start",
                    "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1"], check=True, capture_output=True)
    try:
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", "CREATE DATABASE dagster"],
                       check=True, capture_output=True)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/dagster"
    finally:
        subprocess.run([*as_postgres, f"{bindir}/pg_ctl", "-D", f"{data}/db", "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)

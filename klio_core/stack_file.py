"""Which local stack a command talks to: the settings ``klio-dev`` was started with.

``klio-dev`` writes them to ``$DAGSTER_HOME/klio-stack.json`` when its parts are up (the
webserver's URL, the Pub/Sub emulator's host, the data folder) and removes the file when it
stops. Every command reads that file, so a second terminal needs nothing exported; a flag, then
a variable, overrides what the file says:

| what | variable | default with no stack file |
| --- | --- | --- |
| the Dagster home holding the file | ``DAGSTER_HOME`` | ``.dagster_home`` beside this project (as ``scripts/dev.sh``) |
| the webserver | ``KLIO_WEBSERVER_URL`` | ``http://127.0.0.1:3000`` |
| the Pub/Sub emulator | ``PUBSUB_EMULATOR_HOST`` (Google's) | ``127.0.0.1:<KLIO_PUBSUB_EMULATOR_PORT, 8085>`` |
| a real Pub/Sub project (no emulator) | ``KLIO_PUBSUB_PROJECT`` | none: the emulator's ``klio-dev`` |
| the input topic | ``KLIO_PUBSUB_TOPIC`` | ``klio-media-events`` |
| the data folder | ``KLIO_DATA_ROOT`` | ``data`` |

Standard library only: the commands that read it start in a fraction of a second.
"""

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

STACK_FILE = "klio-stack.json"
DEV_PROJECT = "klio-dev"
"""The project name on the local Pub/Sub emulator."""
DEFAULT_WEBSERVER_URL = "http://127.0.0.1:3000"
DEFAULT_TOPIC = "klio-media-events"
DEFAULT_EMULATOR_PORT = 8085
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Stack:
    webserver_url: str = DEFAULT_WEBSERVER_URL
    pubsub_project: str | None = None
    """A real Google Cloud project; None: the emulator at ``pubsub_emulator_host``."""
    pubsub_emulator_host: str | None = None
    pubsub_topic: str = DEFAULT_TOPIC
    data_root: str = "data"
    source: str = "defaults"
    """Where these came from: the stack file's path, or "defaults"."""

    @property
    def project(self) -> str:
        return self.pubsub_project or DEV_PROJECT

    def describe(self) -> str:
        pubsub = (f"Pub/Sub project {self.pubsub_project}" if self.pubsub_project
                  else f"the Pub/Sub emulator at {self.pubsub_emulator_host}")
        return f"the stack of {self.source} (webserver {self.webserver_url}, {pubsub})"


def dagster_home(environ: Mapping[str, str] = os.environ) -> str:
    return environ.get("DAGSTER_HOME") or os.path.join(_ROOT, ".dagster_home")


def write_stack(home: str, stack: Stack) -> str:
    """Write ``stack`` as ``home``'s stack file (atomically); its path."""
    path = os.path.join(home, STACK_FILE)
    fields = {k: v for k, v in asdict(stack).items() if k != "source"}
    with open(path + ".tmp", "w") as f:
        json.dump({**fields, "pid": os.getpid()}, f, indent=1)
    os.replace(path + ".tmp", path)
    return path


def remove_stack(home: str) -> None:
    """Remove ``home``'s stack file, if this process wrote it."""
    path = os.path.join(home, STACK_FILE)
    try:
        with open(path) as f:
            mine = json.load(f).get("pid") == os.getpid()
    except (OSError, ValueError):
        return
    if mine:
        os.remove(path)


def find_stack(environ: Mapping[str, str] = os.environ) -> Stack:
    """The stack: its file in the Dagster home (if its ``klio-dev`` still runs), with each
    variable that is set taking precedence."""
    stack = Stack()
    path = os.path.join(dagster_home(environ), STACK_FILE)
    try:
        with open(path) as f:
            saved = json.load(f)
        if _alive(saved.pop("pid", None)):
            stack = Stack(**{k: v for k, v in saved.items() if k in Stack.__dataclass_fields__}, source=path)
    except (OSError, ValueError, TypeError):
        pass
    overrides: dict[str, Any] = {field: environ[name] for field, name in (
        ("webserver_url", "KLIO_WEBSERVER_URL"), ("pubsub_project", "KLIO_PUBSUB_PROJECT"),
        ("pubsub_emulator_host", "PUBSUB_EMULATOR_HOST"), ("pubsub_topic", "KLIO_PUBSUB_TOPIC"),
        ("data_root", "KLIO_DATA_ROOT")) if environ.get(name)}
    if "pubsub_project" in overrides and "pubsub_emulator_host" not in overrides:
        overrides["pubsub_emulator_host"] = None  # a real project: not the file's emulator
    stack = replace(stack, **overrides)
    if not stack.pubsub_project and not stack.pubsub_emulator_host:
        port = environ.get("KLIO_PUBSUB_EMULATOR_PORT") or DEFAULT_EMULATOR_PORT
        stack = replace(stack, pubsub_emulator_host=f"127.0.0.1:{port}")
    return stack


def stack_environ(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """``environ`` with the running stack's Pub/Sub and data settings filled in where it sets
    none, for commands that read the code location's settings (``klio_assets.settings``)."""
    stack = find_stack(environ)
    out = dict(environ)
    if stack.source == "defaults":
        return out
    out.setdefault("DAGSTER_HOME", dagster_home(environ))
    out.setdefault("KLIO_DATA_ROOT", stack.data_root)
    if stack.pubsub_project:
        out.setdefault("KLIO_PUBSUB_PROJECT", stack.pubsub_project)
    elif stack.pubsub_emulator_host:
        out.setdefault("PUBSUB_EMULATOR_HOST", stack.pubsub_emulator_host)
    return out


def _alive(pid) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

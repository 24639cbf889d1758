"""Imports run one way, top to bottom (docs/architecture.md, "The layers"):

    klio_cli, klio_dev  (the commands; the local dev stack)
    klio_assets         (the public API and framework, the built-in assets, the code location)
    sensors, jobs
    resources
    pipelines           (Beam workers; no Dagster)
    klio_core           (no Dagster, no Beam: media IDs, events on the wire, media types, codecs,
                         checks, the media store interface, records)

A module may import its own package and any package below it, never one beside or above it.
Imports inside functions count too. The built-in assets use only the public API.
"""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RANK = {"klio_core": 0, "pipelines": 1, "resources": 2, "sensors": 3, "jobs": 3, "klio_assets": 4, "klio_cli": 5,
        "klio_dev": 5}


def imported_modules(path: str) -> set[str]:
    """The dotted names of every module the module at ``path`` imports, anywhere in it."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def project_imports(path: str) -> set[str]:
    """The project packages that the module at ``path`` imports, anywhere in it."""
    return {name.split(".")[0] for name in imported_modules(path)} & set(RANK)


def modules() -> list[tuple[str, str]]:
    return [(package, os.path.join(folder, name))
            for package in RANK for folder, _, names in os.walk(os.path.join(ROOT, package))
            for name in sorted(names) if name.endswith(".py")]


@pytest.mark.parametrize(("package", "path"), modules(), ids=lambda v: os.path.relpath(v, ROOT) if "/" in v else v)
def test_imports_run_down_the_layers(package, path):
    wrong = sorted(p for p in project_imports(path) if p != package and RANK[p] >= RANK[package])
    assert not wrong, f"{os.path.relpath(path, ROOT)} ({package}) imports {wrong}, which are not below it"


def test_the_check_sees_an_import_that_runs_back_up(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from klio_assets.framework.media_asset import MediaAsset\n")
    assert project_imports(str(module)) == {"klio_assets"}


def test_beam_workers_and_the_stores_load_no_dagster():
    """What runs on a Beam worker (pipelines) and the media stores import no Dagster at all."""
    probe = ("import sys, pipelines.run, pipelines.child_worker, klio_core.media_store, klio_core.wire; "
             "print(sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.')))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# The modules allowed on private Dagster API, and why: resources/sqlite_event_log.py says which
# upstream issues it waits for (resources/postgres_event_log.py, on public imports, overrides one
# private method of Dagster's PostgreSQL storage with that module's function); Dagster's SQLite run
# and schedule storages, which resources/sqlite_storages.py extends, are not exported. Generated
# protobuf code imports what protoc chooses.
PRIVATE_API_ADAPTERS = (os.path.join("resources", "sqlite_event_log.py"), os.path.join("resources", "sqlite_storages.py"),
                        os.path.join("resources", "check_plans.py"), os.path.join("resources", "postgres_event_log.py"))
GENERATED = {os.path.join("klio_core", "klio_message_pb2.py")}
THIRD_PARTY = ("dagster", "dagster_", "apache_beam", "google")


def private_imports(path: str) -> list[str]:
    """Dagster, Beam and Google names that the module imports from outside their public API: a
    module or name whose dotted path has a part starting with ``_`` (``dagster._core``,
    ``from dagster import _check``), or Beam's ``internal`` packages."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported += [f"{node.module}.{alias.name}" for alias in node.names]
    return sorted(name for name in imported if name.startswith(THIRD_PARTY) and (
        any(part.startswith("_") and not part.startswith("__") for part in name.split("."))
        or (name.startswith("apache_beam.") and ".internal" in name)))


def python_files() -> list[str]:
    return sorted(os.path.relpath(os.path.join(folder, name), ROOT)
                  for top in [*RANK, "teams", "tests", "bench", "scripts"]
                  for folder, _, names in os.walk(os.path.join(ROOT, top)) for name in names
                  if name.endswith(".py"))


def test_only_public_dagster_beam_and_google_apis():
    used = {path: private_imports(os.path.join(ROOT, path)) for path in python_files()
            if path not in PRIVATE_API_ADAPTERS and path not in GENERATED}
    assert {path: names for path, names in used.items() if names} == {}
    for adapter in PRIVATE_API_ADAPTERS:
        assert private_imports(os.path.join(ROOT, adapter)), f"{adapter} is public now: drop the exception"


def test_the_check_sees_a_private_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from __future__ import annotations\nfrom dagster import _check\n"
                      "from dagster._core.launcher import LaunchRunContext\n"
                      "import dagster as dg\nfrom apache_beam.runners.dataflow.internal import apiclient\n"
                      "from google.cloud import storage\n")
    assert private_imports(str(module)) == ["apache_beam.runners.dataflow.internal.apiclient", "dagster._check",
                                            "dagster._core.launcher.LaunchRunContext"]


# Dagster's tag names, written once in the module that names the upstream work it waits for.
TAG_ADAPTER = os.path.join("resources", "dagster_tags.py")
UNDOCUMENTED_DAGSTER_METHODS = {"to_config_schema", "get_tags_for_partition_key", "build_add_request_for_tags"}


def private_uses(path: str) -> list[str]:
    """Dagster internals a module reaches without importing them: a string literal that is one
    of Dagster's own tags (``"dagster/..."``), an underscored attribute of anything but ``self``
    or ``cls`` (``context._step_execution_context``, ``dg._core``), and Dagster methods that
    are not documented."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("dagster/"):
            found.append(f"line {node.lineno}: tag string {node.value!r}")
        elif isinstance(node, ast.Attribute):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            private = node.attr.startswith("_") and not node.attr.startswith("__") and owner not in ("self", "cls")
            if private or node.attr in UNDOCUMENTED_DAGSTER_METHODS:
                found.append(f"line {node.lineno}: attribute .{node.attr}")
    return found


# Underscored attributes that are not Dagster's, each with its owner.
NOT_DAGSTER = {
    ("tests/klio_assets/builtin/test_plots.py", "._frame"),  # klio_assets.builtin.plots' own helper
    ("tests/resources/test_sqlite_event_log.py", "._engines"),  # the SQLite adapter's own connections
    ("tests/klio_cli/test_register.py", "._api"),  # gcp-storage-emulator's server, to seed it quickly
    ("tests/klio_cli/test_register.py", "._storage"),
    ("tests/klio_dev/test_local_workers.py", "._exit"),  # os._exit: a worker dies as on an OOM kill
}


def test_no_private_dagster_strings_or_attributes():
    used = {path: [u for u in private_uses(os.path.join(ROOT, path))
                   if (path, u.split(": attribute ")[-1]) not in NOT_DAGSTER]
            for path in python_files()
            if path not in (*PRIVATE_API_ADAPTERS, TAG_ADAPTER, "tests/test_layers.py") and path not in GENERATED}
    assert {path: names for path, names in used.items() if names} == {}
    assert private_uses(os.path.join(ROOT, TAG_ADAPTER)), "no tag is written by hand any more: drop the module"


def test_the_check_sees_private_strings_and_attributes(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import dagster as dg\ntags = {'dagster/partition': 'x'}\n"
                      "def f(context, cls_):\n    self = context\n    return (context._step_execution_context, dg._core,\n"
                      "            cls_.to_config_schema(), self._mine)\n")
    assert private_uses(str(module)) == ["line 2: tag string 'dagster/partition'",
                                         "line 5: attribute ._step_execution_context", "line 5: attribute ._core",
                                         "line 6: attribute .to_config_schema"]

"""Imports run one way, top to bottom (docs/architecture.md, "The layers"):

    klio_assets  (definitions, CLIs)
    sensors, jobs
    resources
    pipelines    (Beam; no Dagster)
    klio_core    (media IDs, events on the wire, run tags)

A module may import its own package and any package below it, never one beside or above it.
Imports inside functions count too.
"""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RANK = {"klio_core": 0, "pipelines": 1, "resources": 2, "sensors": 3, "jobs": 3, "klio_assets": 4}


def project_imports(path: str) -> set[str]:
    """The project packages that the module at ``path`` imports, anywhere in it."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return {name.split(".")[0] for name in names} & set(RANK)


def modules() -> list[tuple[str, str]]:
    return [(package, os.path.join(ROOT, package, name))
            for package in RANK for name in sorted(os.listdir(os.path.join(ROOT, package)))
            if name.endswith(".py")]


@pytest.mark.parametrize(("package", "path"), modules(), ids=lambda v: os.path.relpath(v, ROOT) if "/" in v else v)
def test_imports_run_down_the_layers(package, path):
    wrong = sorted(p for p in project_imports(path) if p != package and RANK[p] >= RANK[package])
    assert not wrong, f"{os.path.relpath(path, ROOT)} ({package}) imports {wrong}, which are not below it"


def test_the_check_sees_an_import_that_runs_back_up(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from klio_assets.media_asset import MediaAsset\n")
    assert project_imports(str(module)) == {"klio_assets"}


def test_beam_workers_and_the_stores_load_no_dagster():
    """What runs on a Beam worker (pipelines) and the media stores import no Dagster at all."""
    probe = ("import sys, pipelines.run, pipelines.child_worker, resources.media_store, klio_core.wire; "
             "print(sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.')))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

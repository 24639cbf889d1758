"""Every project path, module and name that the docs, docstrings and comments cite exists."""

import importlib
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOPS = ("klio_assets", "klio_core", "klio_cli", "klio_dev", "pipelines", "resources", "sensors", "jobs", "tests",
        "bench", "scripts", "docs", "deploy")
PATH = re.compile(r"(?<![\w/.-])((?:" + "|".join(TOPS) + r")/[\w/.-]*\w)")
PACKAGES = TOPS[:8]
DOTTED = re.compile(r"`{1,2}((?:" + "|".join(PACKAGES) + r")(?:\.\w+)+)(?:\(\))?`{1,2}")
TEXT = (".md", ".py", ".proto", ".yaml", ".yml", ".toml", ".sh", ".txt")


def cited_files() -> list[str]:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [f for f in tracked if (f.endswith(TEXT) or os.path.basename(f) == "Dockerfile")
            and f not in ("requirements.lock", "tests/test_docs.py")  # this file cites wrong ones on purpose
            and os.path.exists(os.path.join(ROOT, f))]


def citations(text: str) -> tuple[set[str], set[str]]:
    """The project paths and the dotted project names in ``text``."""
    paths = {m.rstrip(".") for m in PATH.findall(text)}
    return paths, set(DOTTED.findall(text))


def resolves(dotted: str) -> bool:
    """A module, or a name (attribute chain) inside one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        if importlib.util.find_spec(module.split(".")[0]) is None:
            return False
        try:
            value = importlib.import_module(module)
        except ModuleNotFoundError:
            continue
        try:
            for name in parts[cut:]:
                value = getattr(value, name)
        except AttributeError:
            return False
        return True
    return False


def test_the_check_sees_a_wrong_citation():
    paths, names = citations("see `pipelines/media_ids.py`, ``klio_core.media_ids.storage_name`` and "
                             "`klio_core.wire.no_such_thing`; tests/pipelines/test_media_ids.py")
    assert paths == {"pipelines/media_ids.py", "tests/pipelines/test_media_ids.py"}
    assert not any(os.path.exists(os.path.join(ROOT, p)) for p in paths)
    assert [n for n in sorted(names) if not resolves(n)] == ["klio_core.wire.no_such_thing"]


@pytest.mark.parametrize("path", cited_files())
def test_every_citation_exists(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        paths, names = citations(f.read())
    missing = sorted(p for p in paths if not os.path.exists(os.path.join(ROOT, p)))
    unresolved = sorted(n for n in names if not resolves(n))
    assert (missing, unresolved) == ([], []), f"{path} cites what does not exist"

"""requirements.lock pins a version of every dependency inside pyproject.toml's ranges, and the
environment the suite runs in was installed from it (scripts/setup.sh)."""

import os
import re
import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def locked() -> dict[str, str]:
    with open(os.path.join(ROOT, "requirements.lock")) as f:
        pins = [re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)$", line.strip()) for line in f if not line.startswith("#")]
    return {canonicalize_name(m.group(1)): m.group(2) for m in pins if m}


def declared() -> list[Requirement]:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    names = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return [Requirement(r) for r in names if not r.startswith("klio-assets")]


def test_every_declared_dependency_is_pinned_inside_its_range():
    pins = locked()
    problems = []
    for requirement in declared():
        version = pins.get(canonicalize_name(requirement.name))
        if version is None:
            problems.append(f"{requirement.name}: not in the lock")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement.name}=={version} is outside {requirement.specifier}")
    assert not problems, "run scripts/lock.sh: " + "; ".join(problems)


def test_this_environment_was_installed_from_the_lock():
    pins = locked()
    differ = {}
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        if name in pins and dist.version != pins[name]:
            differ[name] = (dist.version, pins[name])
    assert not differ, f"installed vs locked: {differ}; run scripts/setup.sh"


def test_every_installed_module_has_its_bytecode():
    """scripts/setup.sh compiles bytecode at install, whatever PYTHONDONTWRITEBYTECODE says."""
    from klio_dev.bytecode import coverage

    compiled, total, missing = coverage()
    assert total > 10_000 and compiled == total, f"{total - compiled} of {total} without a .pyc, e.g. {missing}"

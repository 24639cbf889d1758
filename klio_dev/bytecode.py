"""Whether the installed packages have their bytecode: a venv without it compiles Dagster, Beam
and librosa from source in every process (``import klio_assets.definitions`` about 7 s against
under 3 s; ../shared/FACTS.md). ``scripts/setup.sh`` and the Dockerfile compile it at install;
every bench prints ``summary()`` first, so a figure always says which kind of venv it came from.
"""

import importlib.util
import os
import sysconfig


def coverage(site_packages: str | None = None) -> tuple[int, int, list[str]]:
    """``(modules with a current .pyc, modules, the first few without)`` under site-packages."""
    site_packages = site_packages or sysconfig.get_paths()["purelib"]
    total, missing = 0, []
    for folder, _, names in os.walk(site_packages):
        for name in names:
            if name.endswith(".py"):
                total += 1
                path = os.path.join(folder, name)
                if not os.path.exists(importlib.util.cache_from_source(path)):
                    missing.append(os.path.relpath(path, site_packages))
    return total - len(missing), total, missing[:5]


def summary() -> str:
    compiled, total, _ = coverage()
    state = "present" if compiled == total else ("absent" if compiled < total / 2 else "partial")
    return f"bytecode {state}: {compiled:,} of {total:,} installed modules have a .pyc"

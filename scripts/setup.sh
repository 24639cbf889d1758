#!/usr/bin/env bash
# Create .venv and install the project with its test extras, at the versions pinned in
# requirements.lock (scripts/lock.sh refreshes it). Idempotent: reinstalls only when
# pyproject.toml, requirements.lock or model-requirements.txt changed. Sourced by dev.sh and
# test.sh; safe to run on its own.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
UV_VERSION=0.13.8

"$PYTHON" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else 1)' || {
  echo "setup: needs Python 3.11 or 3.12; $PYTHON is $("$PYTHON" --version 2>&1). Set PYTHON=..." >&2
  exit 1
}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

stamp="$VENV/.installed-$(cat "$ROOT/pyproject.toml" "$ROOT/requirements.lock" "$ROOT/model-requirements.txt" \
  "$ROOT"/teams/*/pyproject.toml "$ROOT/scripts/setup.sh" | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  echo "setup: installing the locked dependency set into $VENV"
  # uv installs the locked set in seconds where pip takes minutes (README, "Two commands").
  "$VENV/bin/python" -m pip install --quiet "uv==$UV_VERSION"
  # --compile-bytecode writes every installed module's .pyc now: these machines (and many
  # images) set PYTHONDONTWRITEBYTECODE=1, and without it every process would compile Dagster,
  # Beam and librosa from source again (about 7 s against under 3 s to import the definitions;
  # ../shared/FACTS.md). Each call compiles the whole site-packages, skipping what is current.
  uv=("$VENV/bin/uv" pip install --quiet --compile-bytecode --python "$VENV/bin/python")
  "${uv[@]}" -c "$ROOT/requirements.lock" -e "$ROOT[test]"
  # Other teams' code locations (workspace.yaml loads them beside this one), each its own package
  for team in "$ROOT"/teams/*/; do "${uv[@]}" --no-deps -e "$team"; done
  "${uv[@]}" --no-deps -r "$ROOT/model-requirements.txt"
  # librosa's numba kernels compiled into their on-disk cache by one process, before any two
  # compile them at once (that can leave a cache that segfaults every later process:
  # pipelines/numba_cache.py), and so not inside a timed run or a test.
  "$VENV/bin/python" -m pipelines.numba_cache
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi

#!/usr/bin/env bash
# The README's second command: install if needed, lint and type-check, then run the whole test
# suite (fast and slow tiers, including the browser and PostgreSQL tiers). Extra arguments go to pytest (e.g.
# -m "not slow" for the fast tier only).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"

# Debian packages beside the virtualenv: FFmpeg for the decoding tests, Chromium for the browser
# tier, PostgreSQL for the production-instance tier.
"$ROOT/scripts/system_packages.sh" ffmpeg=/usr/bin/ffmpeg chromium=/usr/bin/chromium \
  "postgresql=/usr/lib/postgresql/*/bin/initdb"

cd "$ROOT"
# The cheapest reviewers first: the linter and the type checker ([tool.ruff], [tool.mypy]).
"$ROOT/.venv/bin/ruff" check .
"$ROOT/.venv/bin/mypy"
exec "$ROOT/.venv/bin/python" -m pytest "$@"

#!/usr/bin/env bash
# The README's second command: install if needed, then run the whole test suite (fast and slow
# tiers). Extra arguments go to pytest (e.g. -m "not slow" for the fast tier only).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "$@"

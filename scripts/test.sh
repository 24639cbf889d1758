#!/usr/bin/env bash
# The README's second command: install if needed, then run the whole test suite (fast and slow
# tiers, including the browser tier). Extra arguments go to pytest (e.g. -m "not slow" for the
# fast tier only).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"

# The browser tier drives Debian's Chromium through Playwright (Playwright's own browser download
# is not used). Install it when missing; that needs root, as on CI and the project's machines.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test: installing Chromium for the browser tests"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "test: /usr/bin/chromium is missing; install it (apt-get install chromium) for the browser tests" >&2
  fi
fi

cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "$@"

#!/usr/bin/env bash
# The README's second command: install if needed, then run the whole test suite (fast and slow
# tiers, including the browser and PostgreSQL tiers). Extra arguments go to pytest (e.g.
# -m "not slow" for the fast tier only).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"

# Servers and browsers the slow tiers use, from Debian's packages. Installing needs root, as on CI
# and the project's machines. Chromium is driven by Playwright (its own browser download is not
# used); PostgreSQL runs as a throwaway server that the tests start.
apt_updated=
install_if_missing() {  # install_if_missing PACKAGE PATH-GLOB
  compgen -G "$2" >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test: installing $1"
    [ -n "$apt_updated" ] || { apt-get update -qq >/dev/null; apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
  else
    echo "test: $1 is missing (apt-get install $1); the tests that need it will fail" >&2
  fi
}
install_if_missing chromium /usr/bin/chromium
install_if_missing postgresql "/usr/lib/postgresql/*/bin/initdb"

cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "$@"

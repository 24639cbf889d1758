#!/usr/bin/env bash
# The README's first command: install if needed, make the demo catalogue, start `dagster dev`.
# Extra arguments go to `dagster dev` (e.g. -p 3001). Honours DAGSTER_HOME and KLIO_DATA_ROOT.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
source "$ROOT/.venv/bin/activate"

export DAGSTER_HOME="${DAGSTER_HOME:-$ROOT/.dagster_home}"
export KLIO_DATA_ROOT="${KLIO_DATA_ROOT:-$ROOT/data}"
mkdir -p "$DAGSTER_HOME" "$KLIO_DATA_ROOT"
[ -e "$DAGSTER_HOME/dagster.yaml" ] || ln -s "$ROOT/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"

klio-demo-catalogue --count "${KLIO_DEMO_COUNT:-12}" --root "$KLIO_DATA_ROOT"

# Start from DAGSTER_HOME: dagster warns about any dagster.yaml in the working folder that is not
# DAGSTER_HOME's, and the repository root holds one.
cd "$DAGSTER_HOME"
exec dagster dev -w "$ROOT/workspace.yaml" "$@"

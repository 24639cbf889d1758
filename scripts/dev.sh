#!/usr/bin/env bash
# The README's first command: install if needed, then `klio-dev`: demo catalogue, Pub/Sub emulator
# (unless KLIO_PUBSUB_PROJECT is set) and `dagster dev`. Extra arguments go to `dagster dev`
# (e.g. -p 3100). Honours DAGSTER_HOME, KLIO_DATA_ROOT, KLIO_MEDIA_PORT (default 3001) and
# KLIO_PUBSUB_EMULATOR_PORT.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
"$ROOT/scripts/system_packages.sh" ffmpeg=/usr/bin/ffmpeg  # decodes M4A/AAC, WebM, MP4 audio
# shellcheck disable=SC1091
source "$ROOT/.venv/bin/activate"

export DAGSTER_HOME="${DAGSTER_HOME:-$ROOT/.dagster_home}"
export KLIO_DATA_ROOT="${KLIO_DATA_ROOT:-$ROOT/data}"
mkdir -p "$DAGSTER_HOME" "$KLIO_DATA_ROOT"
[ -e "$DAGSTER_HOME/dagster.yaml" ] || ln -s "$ROOT/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"

exec klio-dev "$@"

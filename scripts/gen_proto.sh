#!/usr/bin/env bash
# Regenerate sensors/klio_message_pb2.py from sensors/klio_message.proto with grpcio-tools' protoc.
# Usage: scripts/gen_proto.sh [OUT_DIR]   (default: sensors/, i.e. in place)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/sensors}"
"$ROOT/.venv/bin/python" -m grpc_tools.protoc -I "$ROOT/sensors" --python_out="$OUT" "$ROOT/sensors/klio_message.proto"

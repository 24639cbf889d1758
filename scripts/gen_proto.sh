#!/usr/bin/env bash
# Regenerate klio_core/klio_message_pb2.py from klio_core/klio_message.proto with grpcio-tools' protoc.
# Usage: scripts/gen_proto.sh [OUT_DIR]   (default: klio_core/, i.e. in place)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/klio_core}"
"$ROOT/.venv/bin/python" -m grpc_tools.protoc -I "$ROOT/klio_core" --python_out="$OUT" "$ROOT/klio_core/klio_message.proto"

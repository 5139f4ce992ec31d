#!/usr/bin/env bash
# Regenerates the committed Python code from proto/mctl/v1/*.proto.
# CI runs it and fails when the result differs from what is committed.
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-../.venv/bin/python}
"$python" -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. mctl/v1/*.proto

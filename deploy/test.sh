#!/usr/bin/env bash
# The README's second command: the whole test suite (every tier: unit,
# integration, kernel, end to end, fault), after checking that the generated gRPC
# code matches proto/ and that the code is ruff-clean and type-checks.
# Needs root: the tests make real containers. Extra arguments go to pytest
# (e.g. `-m unit`); MCTL_HYPOTHESIS picks the hypothesis profile (ci).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install.sh

echo "== generated code matches proto/"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r proto "$tmp/"
PYTHON="$PWD/.venv/bin/python" bash "$tmp/proto/generate.sh"
if ! diff -r -x __pycache__ proto/mctl/v1 "$tmp/proto/mctl/v1" >/dev/null; then
    echo "proto/mctl/v1: generated code differs from the .proto files; run proto/generate.sh" >&2
    diff -r -x __pycache__ proto/mctl/v1 "$tmp/proto/mctl/v1" | head -20 >&2
    exit 1
fi

echo "== ruff"
.venv/bin/ruff check .

echo "== mypy"
bash tools/typecheck.sh

echo "== pytest"
exec .venv/bin/pytest -q -p no:cacheprovider "$@"

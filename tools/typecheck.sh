#!/usr/bin/env bash
# Type-checks the project with mypy (config: [tool.mypy] in pyproject.toml).
#
# The source folders are installed under one import namespace (agent/ is
# mctl.agent, proto/mctl/v1 is mctl.v1, ...) through setuptools' editable
# finder, which mypy cannot follow; so mypy reads a tree of symbolic links
# laid out as the installed package is. Extra arguments go to mypy.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir "$tree/mctl"
for pair in v1:proto/mctl/v1 common:common scheduler:scheduler agent:agent cli:cli; do
    ln -s "$root/${pair#*:}" "$tree/mctl/${pair%%:*}"
done
cd "$tree"
exec "$root/.venv/bin/mypy" --config-file "$root/pyproject.toml" --cache-dir "$root/.mypy_cache" \
    -p mctl "$@"

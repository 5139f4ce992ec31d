#!/usr/bin/env bash
# The README's first command: install everything, bring up a local cluster,
# run examples/hello.yaml, and show its replicas and their logs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install.sh
mctl=.venv/bin/mctl
$mctl cluster up --nodes "${MCTL_NODES:-1}"
$mctl apply -f examples/hello.yaml --wait
echo
$mctl get nodes
echo
$mctl get replicas -o wide
for r in $($mctl get replicas -o json | .venv/bin/python -c \
        'import json,sys; print(*(i["metadata"]["name"] for i in json.load(sys.stdin)["items"]))'); do
    echo
    echo "--- mctl logs $r"
    $mctl logs "$r"
done
echo
echo "The cluster keeps running. Try: $mctl get replicas -w    Stop it: $mctl cluster down"

#!/usr/bin/env bash
# The README's first command: install everything, bring up a 3-node local
# cluster (every node in its own network namespace, as if on its own VM),
# run examples/web.yaml (one replica per node, published on port 18080 of
# each node's address) and the two-tier examples/api.yaml + front.yaml (a
# front end on port 18081 calling http://api:8080/ by name, through api's
# virtual IP), and show where the replicas run, their addresses, their
# logs, what each node answers on its hostPort, and which api replica
# answered each of a few calls through the front end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install.sh
mctl=.venv/bin/mctl
py=.venv/bin/python
$mctl cluster up --nodes "${MCTL_NODES:-3}"
$mctl apply -f examples/web.yaml --wait
$mctl apply -f examples/api.yaml --wait
$mctl apply -f examples/front.yaml --wait
echo
$mctl get workloads -o wide
echo
$mctl get nodes -o wide
echo
$mctl get replicas -o wide
for r in $($mctl get replicas -o json | $py -c \
        'import json,sys; print(*(i["metadata"]["name"] for i in json.load(sys.stdin)["items"] if i.get("workload") == "web"))'); do
    echo
    echo "--- mctl logs $r"
    $mctl logs "$r"
done
# The replicas learn each other's addresses within a few seconds.
sleep 4
for addr in $($mctl get nodes -o json | $py -c \
        'import json,sys; print(*(n["address"].rsplit(":",1)[0] for n in json.load(sys.stdin)["items"]))'); do
    echo
    echo "--- http://$addr:18080/ (hostPort on that node)"
    $py -c 'import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode(), end="")' \
        "http://$addr:18080/"
done
echo
echo "--- two tiers: front (hostPort 18081) calls http://api:8080/ by name; the node's DNS"
echo "    responder gives api's virtual IP, the node's nft table picks a ready api replica"
for addr in $($mctl get nodes -o json | $py -c \
        'import json,sys; print(*(n["address"].rsplit(":",1)[0] for n in json.load(sys.stdin)["items"]))'); do
    for _ in 1 2; do
        printf '%s  ' "http://$addr:18081/"
        $py -c 'import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode(), end="")' \
            "http://$addr:18081/"
    done
done
echo
echo "The cluster keeps running. Try: $mctl get replicas -w    Stop it: $mctl cluster down"

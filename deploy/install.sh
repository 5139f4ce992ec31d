#!/usr/bin/env bash
# Installs what mctl needs on Debian 12, as root: Debian packages (etcd,
# static busybox, iproute2, nftables for hostPort, runc, crun, skopeo, a
# registry, Python's venv; podman, containerd and chromium for tests), a
# virtualenv in .venv and the project in it. Safe to run again: it only does
# what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (mctl makes namespaces, cgroups and mounts)" >&2
    exit 1
fi

# podman and containerd drive mctl-runtime in the runtime tests; chromium
# and its driver load the web view in its browser test.
packages=(etcd-server etcd-client busybox-static iproute2 nftables runc crun libseccomp2 skopeo
          docker-registry apache2-utils podman containerd chromium chromium-driver
          python3 python3-venv python3-dev gcc)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Debian's etcd-server starts a system etcd where systemd runs; mctl
    # never uses it (its clusters start their own on free ports).
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's own Python 3.11, not whatever python3 is first on PATH.
python=/usr/bin/python3
stamp=.venv/.mctl-installed
want=$(cat pyproject.toml deploy/constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "installing mctl and its Python dependencies into .venv"
    # pip's build chatter goes to a log, shown only if the install fails.
    if ! { .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -c deploy/constraints.txt -e '.[dev]'; } \
            > .venv/install.log 2>&1; then
        cat .venv/install.log >&2
        echo "install.sh: pip install failed (log above, also in .venv/install.log)" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
fi

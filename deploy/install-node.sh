#!/usr/bin/env bash
# Installs mctl on a real machine (a VM of a multi-VM cluster, Debian 12),
# as root, from this checkout, without starting anything:
#   - Debian packages: static busybox (the busybox image), iproute2,
#     nftables (hostPort), runc and crun (optional runtimes), Python's venv;
#     with --control-plane also etcd-server, whose own etcd.service is
#     stopped and masked (mctl-etcd.service replaces it: same ports);
#   - a virtualenv in /opt/mctl with mctl in it (not editable: the checkout
#     may go afterwards), and mctl, mctl-agent, mctl-scheduler and
#     mctl-runtime linked into /usr/local/bin;
#   - the systemd units mctl-etcd, mctl-scheduler and mctl-agent in
#     /etc/systemd/system (replaced on every run: change them with
#     `systemctl edit`), and their example env files in /etc/mctl (only
#     where none exists: yours are never overwritten), /etc/mctl/pki (0700);
#   - docs/multi-vm.md, docs/observability.md and examples/ in /opt/mctl/share/doc/mctl.
# Then follow docs/multi-vm.md: certificates, env files, `systemctl enable
# --now ...`. Safe to run again, e.g. to upgrade after `git pull`.
#
#   bash deploy/install-node.sh [--control-plane] [--root DIR]
#
# --root DIR installs under DIR instead of / and skips apt-get and
# systemctl: to look at (or test) what it installs without touching the
# machine.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)

usage() {
    echo "usage: install-node.sh [--control-plane] [--root DIR]" >&2
    exit 2
}

control_plane=0
root=""
while [ $# -gt 0 ]; do
    case "$1" in
        --control-plane) control_plane=1 ;;
        --root) [ $# -ge 2 ] || usage; root=$(realpath -m "$2"); shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "install-node.sh: unknown argument $1" >&2; usage ;;
    esac
    shift
done

if [ "$(id -u)" != 0 ]; then
    echo "install-node.sh: run as root (it installs packages, units and /etc/mctl)" >&2
    exit 1
fi

prefix="$root/opt/mctl"
etc="$root/etc/mctl"
units="$root/etc/systemd/system"
bin="$root/usr/local/bin"
# systemctl only where systemd runs this machine, and never for --root.
systemd=0
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
    systemd=1
fi

if [ -z "$root" ]; then
    packages=(busybox-static iproute2 nftables runc crun python3 python3-venv python3-dev gcc
              ca-certificates)
    [ "$control_plane" = 1 ] && packages+=(etcd-server etcd-client)
    missing=()
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    if [ "$control_plane" = 1 ] && [ "$systemd" = 1 ] \
            && [ "$(systemctl is-enabled etcd.service 2>/dev/null)" != masked ]; then
        # Debian's package starts its own etcd on 127.0.0.1:2379; ours needs the port.
        echo "stopping and masking Debian's etcd.service (mctl-etcd.service replaces it)"
        systemctl disable --now etcd.service >/dev/null 2>&1 || true
        systemctl mask etcd.service >/dev/null
    fi
fi

# Debian's own Python 3.11, not whatever python3 is first on PATH.
if [ ! -x "$prefix/bin/python" ]; then
    echo "making the virtualenv $prefix"
    /usr/bin/python3 -m venv "$prefix"
fi
echo "installing mctl into $prefix"
# pip builds in the source tree (build/, *.egg-info): build a copy of the
# package's folders, so the checkout stays exactly as it is.
build=$(mktemp -d /tmp/mctl-install.XXXXXX)
trap 'rm -rf "$build"' EXIT
cp -r "$src/pyproject.toml" "$src/proto" "$src/common" "$src/scheduler" "$src/agent" "$src/cli" \
    "$build/"
log="$prefix/install.log"
# pip's chatter goes to a log, shown only if the install fails.
if ! "$prefix/bin/pip" install -q --disable-pip-version-check "$build" >"$log" 2>&1; then
    cat "$log" >&2
    echo "install-node.sh: pip install failed (log above, also in $log)" >&2
    exit 1
fi

install -d -m 0755 "$bin"
for cmd in mctl mctl-agent mctl-scheduler mctl-runtime; do
    ln -sfn "/opt/mctl/bin/$cmd" "$bin/$cmd"
done

install -d -m 0755 "$units" "$etc"
install -d -m 0700 "$etc/pki"
for name in mctl-etcd mctl-scheduler mctl-agent; do
    install -m 0644 "$src/deploy/systemd/$name.service" "$units/$name.service"
    if [ -e "$etc/$name.env" ]; then
        echo "kept $etc/$name.env (the example is $src/deploy/systemd/$name.env)"
    else
        install -m 0644 "$src/deploy/systemd/$name.env" "$etc/$name.env"
        echo "wrote $etc/$name.env: edit it for this machine"
    fi
done

doc="$prefix/share/doc/mctl"
install -d -m 0755 "$doc/examples"
install -m 0644 "$src/docs/multi-vm.md" "$doc/multi-vm.md"
install -m 0644 "$src/docs/observability.md" "$doc/observability.md"
install -m 0644 "$src"/examples/*.yaml "$src/examples/README.md" "$doc/examples/"

if [ "$systemd" = 1 ]; then
    systemctl daemon-reload
fi

what="mctl-agent"
[ "$control_plane" = 1 ] && what="mctl-etcd mctl-scheduler mctl-agent"
cat <<EOF

mctl is installed in $prefix; nothing was started. Next (docs/multi-vm.md):
  1. copy ca.crt and this machine's certificate and key into $etc/pki
  2. edit the env files in $etc for this machine
  3. systemctl enable --now $what
EOF

"""docs/multi-vm.md on three fake VMs: network namespaces on one bridge, as on a LAN.

Each "VM" is a network namespace (mctl-vms<id>-vmN) with an address on the
bridge mctlvms<id>; the host plays the admin's machine on that LAN. The
walkthrough is followed as written, with this run's addresses for the doc's
10.0.0.0/24 and this run's directories for /etc/mctl and /var/lib/mctl:
- the certificates are made with `mctl certs` on the admin machine and each
  VM gets ca.crt and its own certificate and key;
- the env files are deploy/systemd's examples, edited per VM as the doc says;
- each unit's ExecStart is expanded as systemd would (tests/systemdunits.py)
  and run in the VM's namespace with `nsenter --net` (etcd as the etcd user,
  as its unit's User= says). Each agent starts in a cgroup standing in for
  its unit's (in the unified and name=systemd hierarchies, where systemd
  tracks a unit's processes), to show what KillMode=process is for;
- the CLI's context is made with `mctl config set-context` and `use-context`
  as the doc says, then given both schedulers;
- sched1 serves the web view, turned on by the doc's own commands.
At the end the doc's decommissioning steps run and nothing may be left.
systemd itself is not PID 1 here, so Type=, Delegate= and KillMode= are
not exercised by systemd: the test does by hand what they mean.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mctl.common import netns
from mctl.common.rtnetlink import NetlinkError, RtNetlink

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import systemdunits as su  # noqa: E402 - tests/ helper, after the path is set

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent              # stands in for /opt/mctl/bin
POOL = ipaddress.IPv4Network("172.31.0.0/16")  # fake LANs; local clusters use 172.30/16
VMS = ("vm1", "vm2", "vm3")
UNIT_CGROUP_ROOTS = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/systemd"))
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
MCTL_RTPROT = 109                              # agent/network.py marks its routes with it


def wait_for(what: str, predicate: Callable[[], object], timeout: float = 30) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def set_env(text: str, changes: dict[str, str]) -> str:
    """An env file with some KEY=VALUE lines changed, as an editor would."""
    for key, val in changes.items():
        text, n = re.subn(rf"(?m)^{key}=.*$", f"{key}={val}", text)
        assert n == 1, f"{key} is not in the example env file"
    return text


@dataclass
class Proc:
    name: str
    vm: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen | None = None
    unit_cgroups: list[Path] = field(default_factory=list)


class FakeVMs:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.rid = "".join(random.choices("0123456789abcdef", k=4))
        self.bridge = f"mctlvms{self.rid}"
        self.lan = self._free_lan()
        self.procs: list[Proc] = []
        self.admin_home = base / "admin" / ".mctl"
        self.vm_leftovers: list[str] = []

    # -- the doc's names, for this run ------------------------------------------------

    def addr(self, vm: str) -> str:
        """The doc's 10.0.0.1N for vmN, on this run's LAN."""
        return str(self.lan.network_address + 10 + int(vm[2:]))

    def node(self, vm: str) -> str:
        return f"{vm}-{self.rid}"

    def netns(self, vm: str) -> str:
        return f"mctl-vms{self.rid}-{vm}"

    def root(self, vm: str) -> Path:
        return self.base / vm

    def localize(self, text: str, vm: str) -> str:
        """The doc's addresses, node names and paths -> this run's."""
        text = re.sub(r"\b10\.0\.0\.(\d+)\b",
                      lambda m: str(self.lan.network_address + int(m.group(1))), text)
        text = re.sub(r"\b(vm[123])\b", lambda m: self.node(m.group(1)), text)
        for path in ("/etc/mctl/", "/var/lib/mctl/"):
            text = text.replace(path, f"{self.root(vm)}{path}")
        return text

    # -- the LAN ------------------------------------------------------------------------

    def _free_lan(self) -> ipaddress.IPv4Network:
        with RtNetlink() as rt:
            taken = [ipaddress.ip_network(r.destination)
                     for r in rt.routes(socket.AF_INET, table=None) if r.dst_len]
        free = [n for n in POOL.subnets(new_prefix=24) if not any(n.overlaps(t) for t in taken)]
        return random.choice(free)

    def make_lan(self) -> None:
        host = f"{self.lan.network_address + 1}"
        with RtNetlink() as rt:
            rt.add_bridge(self.bridge)
            bridge = rt.index(self.bridge)
            rt.add_address(bridge, host, 24)
            rt.set_link(bridge, up=True)
        for i, vm in enumerate(VMS, start=1):
            path = netns.create(self.netns(vm))
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                with RtNetlink() as rt:
                    rt.add_veth(f"{self.bridge}{i}", "eth0", peer_netns_fd=fd,
                                master=rt.index(self.bridge), up=True)
            finally:
                os.close(fd)
            with netns.rtnl(self.netns(vm)) as rt:
                rt.set_link("lo", up=True)
                eth0 = rt.index("eth0")
                rt.add_address(eth0, self.addr(vm), 24)
                rt.set_link(eth0, up=True)

    # -- running units --------------------------------------------------------------------

    def write_env(self, vm: str, name: str, changes: dict[str, str]) -> Path:
        """/etc/mctl/<name>.env on `vm`: the example with the doc's edits."""
        text = (su.DEPLOY / f"{name}.env").read_text()
        path = self.root(vm) / "etc" / "mctl" / f"{name}.env"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.localize(set_env(text, changes), vm))
        return path

    def start(self, vm: str, name: str, unit_cgroup: bool = False) -> Proc:
        """Runs unit `name`'s ExecStart on `vm` with its env file, as systemd would."""
        unit = su.read_unit(su.DEPLOY / f"{name}.service")
        env_path = self.root(vm) / "etc" / "mctl" / f"{name}.env"
        assert su.value(unit, "Service", "EnvironmentFile") == f"/etc/mctl/{name}.env"
        env = su.service_env(unit, su.parse_env(env_path.read_text(), str(env_path)))
        argv = su.exec_start(unit, env)
        if argv[0].startswith("/opt/mctl/bin/"):
            argv[0] = str(BIN / Path(argv[0]).name)
        user = su.values(unit, "Service", "User")
        if user:
            argv = ["setpriv", f"--reuid={user[0]}", f"--regid={user[0]}", "--init-groups"] + argv
        # Entering the namespace needs root: before setpriv drops it.
        argv = ["nsenter", f"--net={netns.path_of(self.netns(vm))}", "--"] + argv
        proc = Proc(name, vm, argv, env, self.base / f"{vm}-{name}.log")
        if unit_cgroup:
            # Where systemd would put the unit: every child is born in it.
            for top in filter(Path.is_dir, UNIT_CGROUP_ROOTS):
                cg = top / f"mctl-vms{self.rid}-{vm}-{name}.service"
                cg.mkdir(exist_ok=True)
                proc.unit_cgroups.append(cg)
            argv = ["sh", "-c", 'for p in "$@"; do [ "$p" = -- ] && break; '
                    'echo $$ > "$p"; shift; done; shift; exec "$@"', "sh",
                    *[str(cg / "cgroup.procs") for cg in proc.unit_cgroups], "--", *argv]
        self.spawn(proc, argv)
        self.procs.append(proc)
        return proc

    def spawn(self, proc: Proc, argv: list[str]) -> None:
        with open(proc.log, "ab") as log:
            proc.popen = subprocess.Popen(argv, env=proc.env, stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=log, start_new_session=True)
        proc.argv = argv

    def restart(self, proc: Proc) -> None:
        self.spawn(proc, proc.argv)

    def stop(self, proc: Proc, timeout: float = 30) -> None:
        """SIGTERM to the main process only (KillMode=process), then wait."""
        if proc.popen is None or proc.popen.poll() is not None:
            return
        proc.popen.send_signal(signal.SIGTERM)
        try:
            proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait(10)

    def wait_port(self, vm: str, port: int, proc: Proc) -> None:
        def listening() -> bool:
            assert proc.popen and proc.popen.poll() is None, \
                f"{proc.name} on {vm} exited: {proc.log.read_text()[-2000:]}"
            with socket.socket() as s:
                s.settimeout(0.3)
                return s.connect_ex((self.addr(vm), port)) == 0
        wait_for(f"{proc.name} on {vm} to listen on {port}", listening, 30)

    # -- the admin machine ---------------------------------------------------------------

    def mctl(self, *args: str, check: bool = True, timeout: float = 60
             ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MCTL_")}
        env["MCTL_HOME"] = str(self.admin_home)
        proc = subprocess.run([str(BIN / "mctl"), *args], env=env, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"mctl {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def nodes(self) -> dict[str, dict]:
        items = json.loads(self.mctl("get", "nodes", "-o", "json").stdout)["items"]
        return {n["name"]: n for n in items}

    def replicas(self, workload: str) -> list[dict]:
        items = json.loads(self.mctl("get", "replicas", "-o", "json").stdout)["items"]
        return [r for r in items if r.get("workload") == workload]

    # -- cleaning up ---------------------------------------------------------------------

    def decommission(self, vm: str) -> None:
        """The doc's steps to take a node out for good: stop the agent, run cleanup."""
        for proc in self.procs:
            if proc.vm == vm and proc.name == "mctl-agent":
                self.stop(proc)
        env_file = self.root(vm) / "etc" / "mctl" / "mctl-agent.env"
        if not env_file.exists():
            return
        script = (f'set -a; . {env_file}; set +a; exec {BIN}/mctl-agent cleanup '
                  '--name "$MCTL_NODE_NAME" --state-dir "$MCTL_STATE_DIR" '
                  '--cgroup-parent "$MCTL_CGROUP_PARENT"')
        subprocess.run(["nsenter", f"--net={netns.path_of(self.netns(vm))}", "--",
                        "bash", "-c", script], capture_output=True, timeout=120)
        # What cleanup must take away inside the VM, which on a real VM
        # would not vanish with a network namespace: bridge, routes, nft tables.
        with netns.rtnl(self.netns(vm)) as rt:
            self.vm_leftovers += [f"{vm}: link {link.name}" for link in rt.links()
                                  if link.name.startswith("mctl")]
            self.vm_leftovers += [f"{vm}: route {r.destination}"
                                  for r in rt.routes(socket.AF_INET, table=None,
                                                     protocol=MCTL_RTPROT)]
        tables = subprocess.run(["nsenter", f"--net={netns.path_of(self.netns(vm))}", "--",
                                 "nft", "list", "tables"], capture_output=True, text=True)
        self.vm_leftovers += [f"{vm}: nft {line}" for line in tables.stdout.splitlines()]

    def teardown(self) -> None:
        for vm in VMS:
            if netns.exists(self.netns(vm)):
                self.decommission(vm)
        for proc in reversed(self.procs):
            self.stop(proc, timeout=15)
        for proc in self.procs:
            for cg in proc.unit_cgroups:
                # Only what this test started is in these cgroups; cleanup
                # should have ended it, this is for a failed run.
                for pid in (cg / "cgroup.procs").read_text().split() if cg.exists() else []:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                if cg.exists():
                    wait_for(f"{cg} to empty", lambda c=cg: not (c / "cgroup.procs")
                             .read_text().strip(), 10)
                    cg.rmdir()
        for name in netns.list_names(f"mctl-vms{self.rid}-") + [
                n for vm in VMS for n in netns.list_names(f"mctl-{self.node(vm)}-")]:
            netns.remove(name)
        # The VMs' veths go with their namespaces, but the kernel frees a
        # namespace later, on its own time: remove them now.
        with RtNetlink() as rt:
            for link in rt.links():
                if link.name.startswith(self.bridge):
                    try:
                        rt.delete_link(link.ifindex)
                    except NetlinkError as e:
                        if e.errno != errno.ENODEV:  # gone with its namespace meanwhile
                            raise

    def leftovers(self) -> list[str]:
        found = list(self.vm_leftovers)
        found += [f"netns {n}" for n in netns.list_names(f"mctl-vms{self.rid}-")]
        found += [f"netns {n}" for vm in VMS for n in netns.list_names(f"mctl-{self.node(vm)}-")]
        found += [f"link {n}" for n in os.listdir("/sys/class/net")
                  if n.startswith(self.bridge)]
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            found += [f"cgroup {p}" for vm in VMS for p in
                      [hierarchy / "mctl" / self.node(vm)] if p.exists()]
            found += [f"cgroup {p}" for p in hierarchy.glob(f"mctl-vms{self.rid}-*")]
        prefixes = [f"/run/netns/mctl-vms{self.rid}-"] + [
            f"/run/netns/mctl-{self.node(vm)}-" for vm in VMS]
        with open("/proc/self/mountinfo") as f:
            found += [f"mount {line.split()[4]}" for line in f if str(self.base) in line
                      or any(p in line for p in prefixes)]
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if str(self.base).encode() in cmdline:
                found.append(f"process {pid}: {cmdline[:120].decode(errors='replace')}")
        return found


def make_certs(vms: FakeVMs) -> None:
    """The doc's "Certificates" step: made on the admin machine, copied to each VM."""
    pki = vms.admin_home / "pki"
    vms.mctl("certs", "init", "--dir", str(pki))
    vms.mctl("certs", "issue", "--dir", str(pki), "--role", "scheduler", "--name", "sched1",
             "--san", vms.addr("vm1"))
    vms.mctl("certs", "issue", "--dir", str(pki), "--role", "scheduler", "--name", "sched2",
             "--san", vms.addr("vm2"))
    for vm in VMS:
        vms.mctl("certs", "issue", "--dir", str(pki), "--role", "agent", "--name", vms.node(vm),
                 "--san", vms.addr(vm))
    vms.mctl("certs", "issue", "--dir", str(pki), "--role", "admin", "--name", "alice")
    # etcd's own CA: a certificate per member (server and peer), one per scheduler.
    etcd_pki = pki / "etcd"
    vms.mctl("certs", "init", "--dir", str(etcd_pki))
    for vm in VMS:
        vms.mctl("certs", "issue", "--dir", str(etcd_pki), "--role", "scheduler", "--name",
                 f"etcd-{vms.node(vm)}", "--san", vms.addr(vm), "--san", "127.0.0.1")
    for sched in ("sched1", "sched2"):
        vms.mctl("certs", "issue", "--dir", str(etcd_pki), "--role", "scheduler",
                 "--name", sched)
    copies = {"vm1": ["sched1", vms.node("vm1")], "vm2": ["sched2", vms.node("vm2")],
              "vm3": [vms.node("vm3")]}
    etcd_user = pwd.getpwnam("etcd")
    for vm, names in copies.items():
        dest = vms.root(vm) / "etc" / "mctl" / "pki"
        dest.mkdir(parents=True, mode=0o700)
        for f in ["ca.crt"] + [f"{n}{ext}" for n in names for ext in (".crt", ".key")]:
            shutil.copy2(pki / f, dest / f)
        # The doc's `install -d -m 0755 /etc/mctl/pki/etcd`, its member's
        # files owned by etcd (which runs as that user) and the scheduler's.
        (dest / "etcd").mkdir(mode=0o755)
        dest.chmod(0o711)     # etcd may pass through to its own files, list nothing
        member = f"etcd-{vms.node(vm)}"
        for f in ["ca.crt", f"{member}.crt", f"{member}.key"]:
            shutil.copy2(etcd_pki / f, dest / "etcd" / f)
            os.chown(dest / "etcd" / f, etcd_user.pw_uid, etcd_user.pw_gid)
        for f in [f"{n}{ext}" for n in names if n.startswith("sched") for ext in (".crt", ".key")]:
            shutil.copy2(etcd_pki / f, dest / "etcd" / f)
    # The CLI's context (step 6), then both schedulers (step 8).
    vms.mctl("config", "set-context", "vms", "--server", f"{vms.addr('vm1')}:7070",
             "--tls-ca", str(pki / "ca.crt"), "--tls-cert", str(pki / "alice.crt"),
             "--tls-key", str(pki / "alice.key"))
    vms.mctl("config", "use-context", "vms")
    vms.mctl("config", "set-context", "vms", "--server",
             f"{vms.addr('vm1')}:7070,{vms.addr('vm2')}:7070")
    context = json.loads((vms.admin_home / "config.json").read_text())
    assert context["current_context"] == "vms"
    assert context["contexts"]["vms"]["tls_cert"] == str(pki / "alice.crt")


def doc_block(after: str) -> str:
    """The first ```sh block of docs/multi-vm.md after the line `after`."""
    text = (REPO / "docs" / "multi-vm.md").read_text()
    rest = text[text.index(f"\n{after}\n"):]
    start = rest.index("```sh\n") + len("```sh\n")
    return rest[start:rest.index("```", start)]


def turn_on_web_view(vms: FakeVMs, vm: str) -> None:
    """Step 6's "The web view" on `vm`: its token and env edits (the restart is the start)."""
    script = "\n".join(line for line in doc_block("### The web view").splitlines()
                       if not line.startswith("systemctl "))
    subprocess.run(["bash", "-euc", vms.localize(script, vm)], check=True, timeout=30)


def start_etcd(vms: FakeVMs) -> None:
    """One member on each VM (step 4's edits to the example for vm2 and vm3)."""
    user = pwd.getpwnam("etcd")
    procs = []
    for vm in VMS:
        # What StateDirectory=mctl/etcd with StateDirectoryMode=0700 and User=etcd makes.
        data = vms.root(vm) / "var" / "lib" / "mctl" / "etcd"
        data.mkdir(parents=True, mode=0o700)
        os.chown(data, user.pw_uid, user.pw_gid)
        for d in (vms.base, vms.root(vm), data.parent.parent.parent, data.parent.parent,
                  data.parent, vms.root(vm) / "etc", vms.root(vm) / "etc" / "mctl"):
            d.chmod(0o755)
        n = vm[2:]
        changes = {} if vm == "vm1" else {
            "ETCD_NAME": vm,
            "ETCD_LISTEN_CLIENT_URLS": f"https://127.0.0.1:2379,https://10.0.0.1{n}:2379",
            "ETCD_ADVERTISE_CLIENT_URLS": f"https://10.0.0.1{n}:2379",
            "ETCD_LISTEN_PEER_URLS": f"https://10.0.0.1{n}:2380",
            "ETCD_INITIAL_ADVERTISE_PEER_URLS": f"https://10.0.0.1{n}:2380",
            **{key: f"/etc/mctl/pki/etcd/etcd-{vm}.{ext}" for key, ext in (
                ("ETCD_CERT_FILE", "crt"), ("ETCD_KEY_FILE", "key"),
                ("ETCD_PEER_CERT_FILE", "crt"), ("ETCD_PEER_KEY_FILE", "key"))}}
        vms.write_env(vm, "mctl-etcd", changes)
        procs.append(vms.start(vm, "mctl-etcd"))
    # Each member listens at once but serves only with a quorum: all first.
    for vm, proc in zip(VMS, procs, strict=True):
        vms.wait_port(vm, 2379, proc)


@pytest.fixture(scope="module")
def vms() -> Iterator[FakeVMs]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for tool in ("nsenter", "setpriv", "/usr/bin/etcd"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed")
    try:
        pwd.getpwnam("etcd")
    except KeyError:
        pytest.skip("no etcd user (Debian's etcd-server package makes it)")
    base = Path(tempfile.mkdtemp(prefix="mctl-vms-"))
    v = FakeVMs(base)
    try:
        v.make_lan()
        make_certs(v)
        start_etcd(v)
        # sched1 on vm1 with the example's settings; sched2 on vm2 as "HA" says.
        v.write_env("vm1", "mctl-scheduler", {})
        turn_on_web_view(v, "vm1")
        v.wait_port("vm1", 7070, v.start("vm1", "mctl-scheduler"))
        v.write_env("vm2", "mctl-scheduler", {
            "MCTL_LISTEN": "10.0.0.12:7070",
            "MCTL_SCHEDULER_ID": "sched2", "MCTL_TLS_CERT": "/etc/mctl/pki/sched2.crt",
            "MCTL_TLS_KEY": "/etc/mctl/pki/sched2.key",
            "MCTL_ETCD_CERT": "/etc/mctl/pki/etcd/sched2.crt",
            "MCTL_ETCD_KEY": "/etc/mctl/pki/etcd/sched2.key"})
        v.wait_port("vm2", 7070, v.start("vm2", "mctl-scheduler"))
        for vm in VMS:
            n = vm[2:]
            v.write_env(vm, "mctl-agent", {
                "MCTL_NODE_NAME": vm, "MCTL_SCHEDULERS": "10.0.0.11:7070,10.0.0.12:7070",
                "MCTL_LISTEN": f"10.0.0.1{n}:7071", "MCTL_CGROUP_PARENT": f"mctl/{vm}",
                "MCTL_TLS_CERT": f"/etc/mctl/pki/{vm}.crt",
                "MCTL_TLS_KEY": f"/etc/mctl/pki/{vm}.key"})
            v.start(vm, "mctl-agent", unit_cgroup=True)
        wait_for("3 Ready nodes", lambda: ready_count(v) == 3, 60)
        yield v
    finally:
        v.teardown()
        left = v.leftovers()
        shutil.rmtree(base, ignore_errors=True)
        assert not left, "the fake VMs left state behind:\n" + "\n".join(left)


def ready_count(vms: FakeVMs) -> int:
    return sum(bool(n.get("ready")) for n in vms.nodes().values())


def agent(vms: FakeVMs, vm: str) -> Proc:
    return next(p for p in vms.procs if p.vm == vm and p.name == "mctl-agent")


def fetch(url: str) -> str:
    try:
        with HTTP.open(url, timeout=3) as resp:
            return resp.read().decode()
    except (urllib.error.URLError, OSError) as e:
        return f"<{e}>"


def test_nodes_register_at_their_vm_address_over_tls(vms: FakeVMs):
    nodes = vms.nodes()
    assert sorted(nodes) == sorted(vms.node(vm) for vm in VMS)
    for vm in VMS:
        node = nodes[vms.node(vm)]
        assert node.get("ready") and node["address"] == f"{vms.addr(vm)}:7071"
        assert node["labels"] == {"zone": "a"}
    # Without the admin's certificate the scheduler refuses the CLI.
    proc = vms.mctl("--insecure", "get", "nodes", check=False)
    assert proc.returncode == 1


# Run inside a VM: the web view on its loopback, as the ssh tunnel reaches it.
WEB_PROBE = """
import http.client, sys, time
token = sys.argv[1]
def get(path, headers={}):
    c = http.client.HTTPConnection("127.0.0.1", 7080, timeout=10)
    c.request("GET", path, headers=headers)
    return c.getresponse()
for _ in range(100):
    try:
        get("/")
        break
    except OSError:
        time.sleep(0.1)
print(get("/").status, get("/?token=" + "x" * len(token)).status,
      get("/?token=" + token).status)
page = get("/", {"Authorization": "Bearer " + token})
print(page.status, b"<html" in page.read().lower())
events = get("/events", {"Authorization": "Bearer " + token})
seen, deadline = b"", time.monotonic() + 15
while sys.argv[2].encode() not in seen and time.monotonic() < deadline:
    seen += events.read1(65536)
print(events.status, sys.argv[2].encode() in seen)
"""


def test_the_web_view_answers_its_token_on_the_schedulers_loopback(vms: FakeVMs):
    token = (vms.root("vm1") / "etc" / "mctl" / "web.token").read_text().strip()
    assert (vms.root("vm1") / "etc" / "mctl" / "web.token").stat().st_mode & 0o777 == 0o600
    proc = subprocess.run(["nsenter", f"--net={netns.path_of(vms.netns('vm1'))}", "--",
                           sys.executable, "-c", WEB_PROBE, token, vms.node("vm3")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # No token: 401; a wrong one: 403; the right one: a cookie and back to /.
    assert proc.stdout.split() == ["401", "403", "303", "200", "True", "200", "True"]
    # Not on the VM's address: loopback only, as the doc sets it.
    with socket.socket() as s:
        s.settimeout(1)
        assert s.connect_ex((vms.addr("vm1"), 7080)) != 0


def test_web_example_spreads_and_answers_on_every_vm(vms: FakeVMs):
    vms.mctl("apply", "-f", str(REPO / "examples" / "web.yaml"), "--wait", "--timeout", "60")
    reps = wait_for("3 Running replicas", lambda: (
        r if len(r := [x for x in vms.replicas("web") if x["status"].get("phase") == "Running"])
        == 3 else None), 30)
    by_node = {r["node"]: r["metadata"]["name"] for r in reps}
    assert sorted(by_node) == sorted(vms.node(vm) for vm in VMS)
    for vm in VMS:
        page = wait_for(f"{vm}'s hostPort", lambda vm=vm: (
            p if (p := fetch(f"http://{vms.addr(vm)}:18080/")).startswith("hello from") else None))
        assert page.startswith(f"hello from {by_node[vms.node(vm)]} at ")


def test_container_reaches_containers_on_other_vms(vms: FakeVMs):
    reps = {r["node"]: r for r in vms.replicas("web")}
    me = reps[vms.node("vm1")]["metadata"]["name"]
    for vm in ("vm2", "vm3"):
        peer = reps[vms.node(vm)]
        out = vms.mctl("exec", me, "--", "wget", "-q", "-O-",
                       f"http://{peer['status']['ip']}:8080/").stdout
        assert out.startswith(f"hello from {peer['metadata']['name']}")


def test_troubleshooting_commands_reach_each_vm(vms: FakeVMs):
    node = vms.node("vm2")
    assert f"{vms.addr('vm2')}:7071" in vms.mctl("describe", "node", node).stdout
    out = vms.mctl("debug", "node", node, "containers").stdout
    assert "default_web-" in out and "running" in out


def test_agent_restart_leaves_containers_running_and_adopts_them(vms: FakeVMs):
    vm = "vm2"
    proc = agent(vms, vm)
    rep = next(r for r in vms.replicas("web") if r["node"] == vms.node(vm))
    name = rep["metadata"]["name"]
    state = (vms.root(vm) / "var" / "lib" / "mctl" / "agent" / "containers" / f"default_{name}"
             / "state.json")
    init = json.loads(state.read_text())["init_pid"]
    # The container is in the agent unit's cgroup where systemd tracks
    # processes: KillMode=control-group would kill it with the agent.
    for cg in proc.unit_cgroups:
        assert str(init) in (cg / "cgroup.procs").read_text().split(), cg

    vms.stop(proc)                      # what `systemctl restart` does with KillMode=process
    os.kill(init, 0)                    # the container outlived its agent
    assert fetch(f"http://{vms.addr(vm)}:18080/").startswith(f"hello from {name}")
    vms.restart(proc)                   # Restart=, in the same unit cgroup
    wait_for("the node to be Ready again", lambda: vms.nodes()[vms.node(vm)].get("ready"), 30)
    time.sleep(2)
    after = next(r for r in vms.replicas("web") if r["metadata"]["name"] == name)
    assert after["status"]["phase"] == "Running" and after["status"].get("restarts", 0) == 0
    assert json.loads(state.read_text())["init_pid"] == init


def etcd_answers(vms: FakeVMs, vm: str, **tls: str) -> bool:
    """Whether vm's etcd member serves a read to a client with these credentials."""
    import grpc
    import pyetcd
    import pyetcd.exceptions

    client = pyetcd.client(host=vms.addr(vm), port=2379, timeout=3, **tls)
    try:
        client.get_prefix("/mctl/")
        return True
    except (pyetcd.exceptions.Etcd3Exception, grpc.RpcError):
        return False
    finally:
        client.close()


def test_etcd_admits_only_the_schedulers_and_survives_a_member_down(vms: FakeVMs, tmp_path):
    pki = vms.admin_home / "pki"
    ca = str(pki / "etcd" / "ca.crt")
    assert etcd_answers(vms, "vm2", ca_cert=ca, cert_cert=str(pki / "etcd" / "sched1.crt"),
                        cert_key=str(pki / "etcd" / "sched1.key"))
    assert not etcd_answers(vms, "vm2")                 # plain text
    assert not etcd_answers(vms, "vm2", ca_cert=ca)     # no client certificate
    # The cluster CA's certificates (the admin's) open the API, not etcd.
    assert not etcd_answers(vms, "vm2", ca_cert=ca, cert_cert=str(pki / "alice.crt"),
                            cert_key=str(pki / "alice.key"))
    # One member of three down: the schedulers go on with the other two.
    member = next(p for p in vms.procs if p.name == "mctl-etcd" and p.vm == "vm1")
    vms.stop(member)
    try:
        # Reads and writes: a workload comes and goes; web stays as it was.
        job = tmp_path / "pause.yaml"
        job.write_text("apiVersion: mctl/v1\nkind: Workload\nmetadata: {name: pause}\n"
                       "spec: {image: busybox, command: [sleep, '1000']}\n")
        vms.mctl("apply", "-f", str(job), "--wait", "--timeout", "60")
        vms.mctl("delete", "-f", str(job), "--timeout", "60")
        assert ready_count(vms) == 3 and len(vms.replicas("web")) == 3
    finally:
        vms.restart(member)
        vms.wait_port("vm1", 2379, member)


def test_second_scheduler_takes_over(vms: FakeVMs):
    sched1 = next(p for p in vms.procs if p.name == "mctl-scheduler" and p.vm == "vm1")
    vms.stop(sched1)
    # The CLI and the agents have both addresses and use the one that answers.
    wait_for("3 Ready nodes through sched2", lambda: ready_count(vms) == 3, 30)
    vms.mctl("delete", "-f", str(REPO / "examples" / "web.yaml"), "--timeout", "60")
    wait_for("web's replicas to go", lambda: not vms.replicas("web"), 60)
    for vm in VMS:
        assert not list((vms.root(vm) / "var/lib/mctl/agent/containers").iterdir())

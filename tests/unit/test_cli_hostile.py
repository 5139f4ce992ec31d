"""Every `mctl` verb, given hostile arguments, fails in one line: no traceback, no hang.

The CLI runs in-process (`main`) against a real control plane (api.py on
the in-memory store, fake_store.py) served on loopback, which knows one
node whose agent address answers nothing, and against a port where nothing
listens. The inputs are what a careless or hostile user types: endless
files (/dev/zero, a FIFO that never stops, one that never starts), a
directory of big files, a 3 MB field, names of odd unicode and of a megabyte,
negative numbers, unknown kinds and output formats. Each must end with
exit status 1 or 2 and exactly one line on stderr.

`test_every_verb_is_covered` keeps the table honest: a new verb in the
parser without hostile cases here fails it.
"""

from __future__ import annotations

import argparse
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fake_store import FakeStore

from mctl.cli import main as cli
from mctl.common import boundedread, rpc
from mctl.scheduler.api import ControlPlane
from mctl.scheduler.cache import StateCache
from mctl.scheduler.controller import Controller
from mctl.scheduler.store import Write
from mctl.scheduler.usage import UsageCache
from mctl.v1 import control_pb2_grpc, types_pb2

ODD = "ｗｅｂ-\u202e\u0301名前🙂" * 40        # full-width, bidi override, combining, emoji
HUGE = "a" * (1 << 20)                      # argv is not exec'd in-process: no 128 KiB cap
WORKLOAD = """\
apiVersion: mctl/v1
kind: Workload
metadata: {{name: web}}
spec:
  image: busybox
  {extra}
"""


@dataclass
class World:
    server: str          # the control plane
    nowhere: str         # nothing listens
    tmp: str

    def path(self, name: str) -> str:
        return os.path.join(self.tmp, name)


def _closed_port() -> Iterator[str]:
    with socket.socket() as sock:       # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    tmp = str(tmp_path_factory.mktemp("hostile"))
    nowhere_iter = _closed_port()
    nowhere = next(nowhere_iter)
    store = FakeStore()
    node = types_pb2.Node(name="n1", address=nowhere)
    rep = types_pb2.Replica(workload="web", node="n1")
    rep.metadata.namespace, rep.metadata.name = "default", "web-abcde"
    rep.status.phase = types_pb2.REPLICA_PHASE_RUNNING
    store.commit([Write(store.keys.node("n1"), node.SerializeToString(), 0),
                  Write(store.keys.replica("default", "web-abcde"), rep.SerializeToString(), 0)])
    cache = StateCache(store)
    controller = Controller(store, seed=1)
    api = ControlPlane(store, cache, controller, UsageCache(),
                       lambda n: rpc.make_channel(n.address))
    server = rpc.make_server(max_workers=4)
    control_pb2_grpc.add_ControlPlaneServicer_to_server(api, server)
    port = rpc.bind(server, "127.0.0.1:0")
    server.start()

    os.mkdir(os.path.join(tmp, "bigdir"))
    for i in range(6):
        with open(os.path.join(tmp, "bigdir", f"part{i}.yaml"), "w") as f:
            f.write("#" * (1 << 20))
    with open(os.path.join(tmp, "field.yaml"), "w") as f:
        f.write(WORKLOAD.format(extra="env: {A: " + "x" * (3 << 20) + "}"))
    with open(os.path.join(tmp, "ssh.yaml"), "w") as f:
        f.write(WORKLOAD.format(extra="ports: [{containerPort: 22, hostPort: 22}]"))
    with open(os.path.join(tmp, "web.yaml"), "w") as f:
        f.write(WORKLOAD.format(extra=""))
    with open(os.path.join(tmp, "zeros.tar"), "wb") as f:
        f.write(bytes(1 << 16))
    os.mkfifo(os.path.join(tmp, "silent.fifo"))
    yield World(f"127.0.0.1:{port}", nowhere, tmp)
    server.stop(grace=None)
    controller.close()
    cache.close()
    nowhere_iter.close()


@pytest.fixture(autouse=True)
def environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MCTL_HOME", str(tmp_path / "home"))
    for var in ("MCTL_SERVER", "MCTL_NAMESPACE", "MCTL_TLS_CA", "MCTL_TLS_CERT",
                "MCTL_TLS_KEY", "MCTL_INSECURE", "MCTL_CONTEXT"):
        monkeypatch.delenv(var, raising=False)
    # A FIFO nobody writes to: give up in a second, not in half a minute.
    monkeypatch.setattr(boundedread, "DEFAULT_IDLE_SECONDS", 1.0)


class EndlessFifo:
    """A FIFO with a writer that never stops, until its reader goes away."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.mkfifo(path)
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.thread.start()

    def _write(self) -> None:
        try:
            with open(self.path, "wb") as f:      # blocks until the CLI opens it
                while True:
                    f.write(b"a" * 65536)
        except (BrokenPipeError, OSError):
            pass    # the reader stopped: what the test wants

    def close(self) -> None:
        # A reader that never came: unblock the writer's open, then tidy up.
        if self.thread.is_alive():
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            os.close(fd)
        self.thread.join(5)
        os.unlink(self.path)


# (verb, arguments): {server} and {nowhere} pick the target ({server-tls}
# without --insecure), {tmp} the files, {nowhere-address} is the address
# alone, {endless} a fresh EndlessFifo. Each must fail in one line.
CASES: list[tuple[str, list[str]]] = [
    ("apply", ["{server}", "apply", "-f", "/dev/zero"]),
    ("apply", ["{server}", "apply", "-f", "{endless}"]),
    ("apply", ["{server}", "apply", "-f", "{tmp}/silent.fifo"]),
    ("apply", ["{server}", "apply", "-f", "{tmp}/bigdir"]),
    ("apply", ["{server}", "apply", "-f", "{tmp}/field.yaml"]),
    ("apply", ["{server}", "apply", "-f", "{tmp}/ssh.yaml"]),         # hostPort 22: the server
    ("apply", ["{server}", "apply", "-f", "{tmp}/nonexistent.yaml"]),
    ("apply", ["{server}", "apply", "-f", "/"]),
    ("apply", ["{nowhere}", "apply", "-f", "{tmp}/web.yaml"]),
    ("apply", ["{server}", "apply", "-f", "{tmp}/web.yaml", "--timeout", "nan-ish"]),
    ("apply", ["{server}", "-n", ODD, "apply", "-f", "{tmp}/web.yaml"]),
    ("delete", ["{server}", "delete", "workload", ODD]),
    ("delete", ["{server}", "delete", "workload", HUGE]),
    ("delete", ["{server}", "delete", "workload", "nope", "--no-wait"]),
    ("delete", ["{server}", "delete", "-f", "/dev/zero"]),
    ("delete", ["{server}", "delete", "replicas", "x"]),
    ("delete", ["{nowhere}", "delete", "workload", "web"]),
    ("get", ["{server}", "get", "replicas", "-o", "xml"]),
    ("get", ["{server}", "get", HUGE]),
    ("get", ["{server}", "get", "replicas", ODD]),
    ("get", ["{server}", "get", "nodes", "nope"]),
    ("get", ["{nowhere}", "get", "replicas", "-A"]),
    ("logs", ["{server}", "logs", "/" * 1000]),
    ("logs", ["{server}", "logs", "workload/" + ODD]),
    ("logs", ["{server}", "logs", HUGE, "--tail", "-5"]),
    ("logs", ["{server}", "logs", "nope", "--tail", "-99999999999"]),
    ("logs", ["{server}", "logs", "web-abcde"]),                       # its node is away
    ("logs", ["{nowhere}", "logs", "web-abcde"]),
    ("debug node", ["{server}", "debug", "node", ODD]),
    ("debug node", ["{server}", "debug", "node", "n1", "--limit", "-1"]),
    ("debug node", ["{server}", "debug", "node", "n1", "--address", "{nowhere-address}"]),
    ("debug node", ["{nowhere}", "debug", "node", "n1"]),
    ("describe", ["{server}", "describe", "gadget", "x"]),
    ("describe", ["{server}", "describe", "replica", HUGE]),
    ("describe", ["{server}", "describe", "node", "nope"]),
    ("describe", ["{nowhere}", "describe", "workload", "web"]),
    ("top", ["{server}", "top", ODD]),
    ("top", ["{nowhere}", "top", "nodes"]),
    ("exec", ["{server}", "exec", "web-abcde"]),
    ("exec", ["{server}", "exec", ODD, "--", "sh"]),
    ("exec", ["{server}", "exec", "nope", "--", "sh"]),
    ("exec", ["{server}", "exec", "web-abcde", "--", HUGE]),           # its node is away
    ("exec", ["{nowhere}", "exec", "web-abcde", "--", "sh"]),
    ("cordon", ["{server}", "cordon", HUGE]),
    ("cordon", ["{server}", "cordon", "nope"]),
    ("uncordon", ["{server}", "uncordon", ODD]),
    ("uncordon", ["{nowhere}", "uncordon", "n1"]),
    ("drain", ["{server}", "drain", ODD]),
    ("drain", ["{server}", "drain", "n1", "--timeout", "-1"]),
    ("drain", ["{nowhere}", "drain", "n1"]),
    # Only what fails before acting: these tests must not start or stop clusters.
    ("cluster", ["{server}", "cluster", "explode"]),
    ("cluster", ["{server}", "cluster", "up", "--nodes", "-x"]),
    ("cluster", ["{server}", "cluster", "up", "--timeout", ODD]),
    ("cluster", ["{server}", "cluster", "up", "--image-gc-high", "-5"]),
    ("cluster", ["{server}", "cluster", "up", "--image-gc-low", "90", "--image-gc-high", "50"]),
    ("cluster", ["{server}", "cluster", "up", "--image-gc-high", "lots"]),
    ("certs", ["{server}", "certs", "show", "/dev/zero"]),
    ("certs", ["{server}", "certs", "show", "{endless}"]),
    ("certs", ["{server}", "certs", "show", "{tmp}/web.yaml"]),
    ("certs", ["{server}", "certs", "show"]),
    ("certs", ["{server}", "certs", "issue", "--role", "admin", "--dir", "{tmp}/no-ca"]),
    ("certs", ["{server}", "certs", "init", "--days", "many"]),
    ("certs", ["{server-tls}", "--tls-ca", "/dev/zero", "--tls-cert", "/dev/zero", "--tls-key",
               "/dev/zero", "get", "nodes"]),
    ("certs", ["{server-tls}", "--tls-ca", "{endless}", "--tls-cert", "/dev/null", "--tls-key",
               "/dev/null", "get", "nodes"]),
    ("image import", ["{server}", "image", "import", "/dev/zero"]),
    ("image import", ["{server}", "image", "import", "{endless}"]),
    ("image import", ["{server}", "image", "import", "{tmp}/zeros.tar"]),
    ("image import", ["{server}", "image", "import", "{tmp}/web.yaml"]),
    ("image import", ["{server}", "image", "import", "{tmp}/nonexistent.tar"]),
    ("image import", ["{server}", "image", "import", "{tmp}/zeros.tar", "--max-size", "-1"]),
    ("image import", ["{server}", "image", "import", "{tmp}/zeros.tar", "--max-size", ODD]),
    ("image import", ["{server}", "image", "import", "{tmp}", "--name", HUGE]),
    ("image ls", ["{server}", "image", "ls", "-o", "yaml"]),
    ("image ls", ["{nowhere}", "image", "ls"]),
    ("image pull", ["{server}", "image", "pull", HUGE]),
    ("image pull", ["{server}", "image", "pull", "reg.local/app@sha256:" + HUGE]),
    ("image pull", ["{server}", "image", "pull", ODD]),
    ("image pull", ["{server}", "image", "pull", "busybox"]),
    ("image pull", ["{nowhere}", "image", "pull", "reg.local:5000/app:1"]),
    ("image rm", ["{server}", "image", "rm", HUGE]),
    ("image rm", ["{nowhere}", "image", "rm", "busybox"]),
    ("get", ["{server}", "get", "replicas", "-l", "app=" + ODD]),
    ("get", ["{server}", "get", "replicas", "-l", "a in (b"]),
    ("get", ["{server}", "get", "replicas", "-l", ",".join(["a"] * 1000)]),
    ("get", ["{server}", "get", "replicas", "-o", "jsonpath={.items[?(@.x=="]),
    ("get", ["{server}", "get", "replicas", "-o", "jsonpath={range .items[*]}"]),
    ("get", ["{server}", "get", "replicas", "-o", "jsonpath=" + "{" * 5000]),
    ("get", ["{server}", "get", "replicas", "-o", "custom-columns=NAME"]),
    ("get", ["{server}", "get", "replicas", "-o", "custom-columns=" + "A:.a," * 100]),
    ("get", ["{server}", "get", "replicas", "--sort-by", "{.items[}"]),
    ("get", ["{server}", "get", "replicas", "-w", "--sort-by", ".metadata.name"]),
    ("get", ["{server}", "get", "replicas", "-w", "-o", "name"]),
    ("get", ["{server}", "get", "replicas", "-n", ODD]),
    ("get", ["{server}", "get", "replicas", "--context", ODD]),
    ("get", ["{server}", "--context", "nope", "get", "replicas"]),
    ("completion", ["{server}", "completion", "fish"]),
    ("completion", ["{server}", "completion"]),
    ("config get-contexts", ["{server}", "config", "get-contexts", "--context", "nope"]),
    ("config current-context", ["{server}", "config", "current-context"]),
    ("config use-context", ["{server}", "config", "use-context", ODD]),
    ("config use-context", ["{server}", "config", "use-context", "nope"]),
    ("config use-context", ["{server}", "config", "use-context", HUGE]),
    ("config set-context", ["{server}", "config", "set-context", HUGE, "--insecure"]),
    ("config set-context", ["{nowhere}", "config", "set-context"]),
    ("config delete-context", ["{server}", "config", "delete-context", "nope"]),
    ("config delete-context", ["{server}", "config", "delete-context", ODD]),
    ("scale", ["{server}", "scale", "workload", "web", "--replicas", "-1"]),
    ("scale", ["{server}", "scale", "workload", "web", "--replicas", "many"]),
    ("scale", ["{server}", "scale", "workload", ODD, "--replicas", "1"]),
    ("scale", ["{server}", "scale", "replica", "web", "--replicas", "1"]),
    ("scale", ["{server}", "scale", "workload/nope", "--replicas", "99999999999"]),
    ("scale", ["{server}", "scale", "workload", "nope", "--replicas", "3"]),
    ("scale", ["{nowhere}", "scale", "workload", "web", "--replicas", "1"]),
    ("rollout status", ["{server}", "rollout", "status", "workload", "nope"]),
    ("rollout status", ["{server}", "rollout", "status", "workload", "web", "--timeout", "nan"]),
    ("rollout status", ["{server}", "rollout", "status", "workload", "web", "--timeout", "-1s"]),
    ("rollout status", ["{server}", "rollout", "status", "workload/" + HUGE]),
    ("rollout status", ["{nowhere}", "rollout", "status", "workload", "web", "--timeout", "1"]),
    ("rollout history", ["{server}", "rollout", "history", "workload", "nope"]),
    ("rollout history", ["{server}", "rollout", "history", "workload", "web", "--revision",
                         "-2"]),
    ("rollout history", ["{server}", "rollout", "history", "node", ODD]),
    ("rollout history", ["{nowhere}", "rollout", "history", "workload", "web"]),
    ("rollout undo", ["{server}", "rollout", "undo", "workload", "nope"]),
    ("rollout undo", ["{server}", "rollout", "undo", "workload", "web", "--to-revision", "x"]),
    ("rollout undo", ["{server}", "rollout", "undo", "workload", HUGE]),
    ("rollout undo", ["{nowhere}", "rollout", "undo", "workload", "web"]),
    ("rollout restart", ["{server}", "rollout", "restart", "workload", "nope"]),
    ("rollout restart", ["{server}", "rollout", "restart", "workload"]),
    ("rollout restart", ["{server}", "rollout", "restart", "gadget/" + ODD]),
    ("rollout restart", ["{nowhere}", "rollout", "restart", "workload", "web"]),
    ("diff", ["{server}", "diff", "-f", "/dev/zero"]),
    ("diff", ["{server}", "diff", "-f", "{endless}"]),
    ("diff", ["{server}", "diff", "-f", "{tmp}/field.yaml"]),
    ("diff", ["{server}", "diff", "-f", "{tmp}/ssh.yaml"]),            # refused by the server
    ("diff", ["{server}", "diff"]),
    ("diff", ["{nowhere}", "diff", "-f", "{tmp}/web.yaml"]),
    ("apply", ["{server}", "apply", "-f", "{tmp}/ssh.yaml", "--dry-run"]),
    ("apply", ["{server}", "apply", "-f", "{tmp}/web.yaml", "--dry-run=client"]),
    ("get", ["{server}", "get", "configs", "-w"]),
    ("get", ["{server}", "get", "replicas", "-w", ODD]),
    ("get", ["{server}", "get", "replicas", "-w"]),           # this server offers no watch
    ("get", ["{nowhere}", "get", "replicas", "-w"]),          # nothing to resume: at once
    ("logs", ["{server}", "logs", "web-abcde", "--since", "yesterday"]),
    ("logs", ["{server}", "logs", "web-abcde", "--since", "-5m"]),
    ("logs", ["{server}", "logs", "web-abcde", "--since", "9999-12-31T23:59:59Z"]),
    ("logs", ["{server}", "logs", "web-abcde", "--since", "2026-01-01T00:00:00"]),
    ("logs", ["{server}", "logs", "web-abcde", "--since", "1" * 5000 + "h"]),   # node away
    ("logs", ["{server}", "logs", "web-abcde", "--previous", "--timestamps"]),  # node away
    ("events", ["{server}", "events", "--for", "pod/x"]),
    ("events", ["{server}", "events", "--for", "replica/" + ODD]),
    ("events", ["{server}", "events", "--for", HUGE]),
    ("events", ["{server}", "events", "-o", "xml"]),
    ("events", ["{server}", "events", "-w", "-A"]),           # this server offers no watch
    ("events", ["{nowhere}", "events", "-w"]),
    ("version", ["{server}", "version", "-o", "xml"]),
    ("version", ["{server}", "version", "--client", "extra"]),
    ("version", ["{nowhere}", "version"]),
    ("", ["{server}", "frobnicate"]),
    ("", ["{server}", "--namespace", HUGE, "get", "replicas"]),
    ("", ["{server}", "get", "replicas", "--namespace", HUGE]),
]


def _leaf_verbs(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = f"{prefix} {name}".strip()
                leaves = list(_leaf_verbs(sub, path))
                yield from leaves or [path]


def test_every_verb_is_covered():
    verbs = set(_leaf_verbs(cli.build_parser()))
    assert verbs == {verb for verb, _ in CASES} - {""}


def _argv(world: World, args: list[str], fifos: list[EndlessFifo]) -> list[str]:
    out = []
    for a in args:
        if a == "{server}":
            out += ["--server", world.server, "--insecure"]
        elif a == "{nowhere}":
            out += ["--server", world.nowhere, "--insecure"]
        elif a == "{server-tls}":
            out += ["--server", world.server]
        elif a == "{endless}":
            fifos.append(EndlessFifo(world.path(f"endless{len(fifos)}.fifo")))
            out.append(fifos[-1].path)
        else:
            out.append(a.replace("{tmp}", world.tmp).replace("{nowhere-address}", world.nowhere))
    return out


@pytest.mark.parametrize(("verb", "args"), CASES,
                         ids=[f"{i}-{v or 'mctl'}" for i, (v, _) in enumerate(CASES)])
def test_hostile_arguments_fail_in_one_line(world, capsys, verb, args):
    fifos: list[EndlessFifo] = []
    try:
        with pytest.raises(SystemExit) as e:
            cli.main(_argv(world, args, fifos))
    finally:
        for fifo in fifos:
            fifo.close()
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    assert e.value.code in (1, 2), out.err
    lines = out.err.splitlines()
    assert len(lines) == 1 and out.err.endswith("\n"), out.err[:2000]
    assert len(lines[0]) < 2000, "a quoted value should be cut short"


def test_what_the_server_refuses_names_the_field(world, capsys):
    with pytest.raises(SystemExit):
        cli.main(["--server", world.server, "--insecure", "apply", "-f",
                  world.path("ssh.yaml")])
    assert capsys.readouterr().err == (
        "mctl: workload default/web: spec.ports[0].hostPort: must be at least 1024, not 22"
        " (the scheduler's --host-port-min)\n")


@pytest.mark.parametrize(("path", "message"), [
    ("/dev/zero", "mctl: /dev/zero: larger than 4 MiB\n"),
    ("{tmp}/bigdir", "mctl: {tmp}/bigdir/part4.yaml: more than 4 MiB of YAML in all\n"),
    ("{tmp}/silent.fifo", "mctl: {tmp}/silent.fifo: cannot read: nothing to read for 1s\n"),
])
def test_apply_reads_a_bounded_amount(world, capsys, path, message):
    with pytest.raises(SystemExit):
        cli.main(["--server", world.nowhere, "--insecure", "apply", "-f",
                  path.replace("{tmp}", world.tmp)])
    assert capsys.readouterr().err == message.replace("{tmp}", world.tmp)


def test_image_import_refuses_what_is_no_archive_before_sending(world, capsys):
    for path, problem in [("/dev/zero", "not a regular file"),
                          (world.path("zeros.tar"), "starts with an empty block"),
                          (world.path("web.yaml"), "only 83 bytes: too short for a tar archive")]:
        with pytest.raises(SystemExit):
            cli.main(["--server", world.nowhere, "--insecure", "image", "import", path])
        err = capsys.readouterr().err
        assert err.startswith(f"mctl: {path}: {problem}"), err

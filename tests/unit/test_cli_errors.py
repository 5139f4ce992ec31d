"""What the CLI says when a call fails: chosen by status code, never by the message.

A control plane on loopback answers every call with the status a test gives
it; the CLI runs in-process (`main`) and must print exactly one line on
stderr and exit 1 (2 for a usage error), with no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from mctl.cli import main as cli
from mctl.cli.client import CliError, call, rpc_error
from mctl.common import reasons, rpc
from mctl.v1 import control_pb2, control_pb2_grpc


@dataclass
class Answer:
    code: grpc.StatusCode
    details: str
    reason: str = ""
    delay: float = 0.0


class Refusing(control_pb2_grpc.ControlPlaneServicer):
    """Answers ListWorkloads and Apply with `answer`, or raises if it is None."""

    def __init__(self) -> None:
        self.answer: Answer | None = None

    def _refuse(self, context: grpc.ServicerContext) -> None:
        if self.answer is None:
            raise RuntimeError("boom\nsecond line")
        time.sleep(self.answer.delay)
        if self.answer.reason:
            reasons.attach(context, self.answer.reason)
        context.abort(self.answer.code, self.answer.details)

    def ListWorkloads(self, request: control_pb2.ListRequest,
                      context: grpc.ServicerContext) -> control_pb2.WorkloadList:
        self._refuse(context)
        return control_pb2.WorkloadList()

    def Apply(self, request: control_pb2.ApplyRequest,
              context: grpc.ServicerContext) -> control_pb2.ApplyResponse:
        self._refuse(context)
        return control_pb2.ApplyResponse()


@contextlib.contextmanager
def closed_port() -> Iterator[str]:
    """A loopback address where nothing listens: bound, never listening, so refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Refusing]]:
    servicer = Refusing()
    s = rpc.make_server(max_workers=4)
    control_pb2_grpc.add_ControlPlaneServicer_to_server(servicer, s)
    port = rpc.bind(s, "127.0.0.1:0")
    s.start()
    yield f"127.0.0.1:{port}", servicer
    s.stop(grace=None)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MCTL_HOME", str(tmp_path / "home"))
    for var in ("MCTL_SERVER", "MCTL_NAMESPACE", "MCTL_TLS_CA", "MCTL_TLS_CERT",
                "MCTL_TLS_KEY", "MCTL_INSECURE"):
        monkeypatch.delenv(var, raising=False)


def run(capsys, *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        cli.main(list(argv))
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return int(e.value.code or 0), out.err


def refused(capsys, server, answer: Answer | None) -> tuple[int, str]:
    address, servicer = server
    servicer.answer = answer
    return run(capsys, "--server", address, "--insecure", "get", "workloads")


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
     grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION,
     grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED],
)
def test_the_request_was_wrong_the_servers_message_says_why(capsys, server, code):
    assert refused(capsys, server, Answer(code, "workload shop/api: spec.replicas: must be"
                                                " at least 0, not -1")) == \
        (1, "mctl: workload shop/api: spec.replicas: must be at least 0, not -1\n")


def test_a_message_with_many_lines_is_printed_as_one(capsys, server):
    assert refused(capsys, server, Answer(grpc.StatusCode.FAILED_PRECONDITION,
                                          "first\n  second\n")) == (1, "mctl: first second\n")


def test_the_store_is_away_the_server_says_so(capsys, server):
    # "Connection reset" would read as a TLS failure if the CLI parsed messages.
    details = "the cluster store is unavailable: etcd: Connection reset by peer"
    assert refused(capsys, server, Answer(grpc.StatusCode.UNAVAILABLE, details,
                                          reasons.STORE_UNAVAILABLE)) == (1, f"mctl: {details}\n")


def test_a_node_behind_the_server_is_away(capsys, server):
    details = "node node1: failed to connect to all addresses"
    assert refused(capsys, server, Answer(grpc.StatusCode.UNAVAILABLE, details,
                                          reasons.NODE_UNAVAILABLE)) == (1, f"mctl: {details}\n")


def test_unavailable_without_a_reason_is_not_read_for_words(capsys, server):
    # The word "store" in a message once meant "the server answered"; no more.
    address, _ = server
    assert refused(capsys, server, Answer(grpc.StatusCode.UNAVAILABLE,
                                          "the cluster store is unavailable")) == \
        (1, f"mctl: cannot reach the mctl server at {address}\n")


def test_nobody_answers(capsys):
    with closed_port() as address:
        assert run(capsys, "--server", address, "--insecure", "get", "workloads") == \
            (1, f"mctl: cannot reach the mctl server at {address}\n")


def test_credentials_refused(capsys, server):
    address, _ = server
    assert refused(capsys, server, Answer(grpc.StatusCode.PERMISSION_DENIED,
                                          "permission denied: agent node1 may not call"
                                          " /mctl.v1.ControlPlane/ListWorkloads")) == \
        (1, "mctl: permission denied: agent node1 may not call"
            " /mctl.v1.ControlPlane/ListWorkloads\n")
    assert refused(capsys, server, Answer(grpc.StatusCode.UNAUTHENTICATED, "no certificate")) \
        == (1, f"mctl: the mctl server at {address} did not accept this client's credentials:"
               " no certificate\n")


def test_a_server_fault_is_named_as_one(capsys, server):
    address, _ = server
    code, err = refused(capsys, server, None)
    assert code == 1
    assert err.startswith(f"mctl: the mctl server at {address} failed: ")
    assert err.count("\n") == 1


def test_unimplemented(capsys, server):
    address, _ = server
    code, err = run(capsys, "--server", address, "--insecure", "get", "nodes")
    assert (code, err) == (1, f"mctl: the mctl server at {address} does not offer this call"
                              " (is it an older version than this mctl?)\n")


def test_a_slow_server(server):
    address, servicer = server
    servicer.answer = Answer(grpc.StatusCode.INTERNAL, "late", delay=1.0)
    args = argparse.Namespace(server=address, insecure=True, tls_ca=None, tls_cert=None,
                              tls_key=None)
    stub = cli.stub(args)
    with pytest.raises(CliError) as e:
        call(args, stub.ListWorkloads, control_pb2.ListRequest(), timeout=0.2)
    assert str(e.value) == f"the mctl server at {address} did not answer in time"


def test_an_error_that_is_no_call():
    args = argparse.Namespace(server_address="127.0.0.1:7070")
    assert str(rpc_error(args, grpc.RpcError("odd\nthing"))) == "odd thing"


# ---------------------------------------------------------------------------
# Usage errors and what the CLI refuses before calling


def test_usage_errors_exit_2(capsys):
    assert run(capsys, "--insecure", "delete") == \
        (2, "mctl: say what to delete: -f FILE, or workload|config|secret|volume NAME...\n")
    assert run(capsys, "--insecure", "exec", "web-x") == \
        (2, "mctl: say what to run: mctl exec REPLICA -- COMMAND [ARGS...]\n")
    code, err = run(capsys, "--insecure", "-n", "Shop", "get", "workloads")
    assert code == 2 and err.startswith('mctl: namespace: "Shop" is not a DNS label')


def test_apply_checks_the_request_as_the_server_would(capsys, server, tmp_path):
    address, servicer = server
    servicer.answer = Answer(grpc.StatusCode.INTERNAL, "the server must not be called")
    app = tmp_path / "app.yaml"
    app.write_text("".join(
        f"---\napiVersion: mctl/v1\nkind: Workload\nmetadata: {{name: w{i}}}\n"
        "spec: {image: busybox}\n" for i in range(101)))
    assert run(capsys, "--server", address, "--insecure", "apply", "-f", str(app)) == \
        (1, f"mctl: {app}: at most 100 workloads in one apply, not 101: apply them in parts\n")
    # -n puts two workloads of one name in one namespace.
    two = tmp_path / "two.yaml"
    two.write_text("".join(
        f"---\napiVersion: mctl/v1\nkind: Workload\nmetadata: {{name: web, namespace: {ns}}}\n"
        "spec: {image: busybox}\n" for ns in ("a", "b")))
    assert run(capsys, "--server", address, "--insecure", "-n", "c", "apply", "-f", str(two)) \
        == (1, f"mctl: {two}: workload c/web: listed twice in one apply (workloads[0] and"
               " workloads[1])\n")
    # A file the CLI finds valid goes to the server, whose answer is shown.
    servicer.answer = Answer(grpc.StatusCode.INVALID_ARGUMENT,
                             "workload default/w0: spec.replicas: must be at most 10, not 20"
                             " (the scheduler's --max-replicas)")
    one = tmp_path / "one.yaml"
    one.write_text("apiVersion: mctl/v1\nkind: Workload\nmetadata: {name: w0}\n"
                   "spec: {image: busybox, replicas: 20}\n")
    assert run(capsys, "--server", address, "--insecure", "apply", "-f", str(one)) == \
        (1, "mctl: workload default/w0: spec.replicas: must be at most 10, not 20"
            " (the scheduler's --max-replicas)\n")


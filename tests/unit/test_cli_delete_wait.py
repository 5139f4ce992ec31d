"""`mctl delete` waits for the replicas to go, and does not call a working delete failed.

Deleting a workload of thousands of replicas is one write; stopping them
takes the controller a while, and a busy server may miss a poll's deadline.
So the wait's --timeout counts from the last progress, a poll that could
not get an answer is retried, and only a deletion that stalls is reported,
saying that it was requested. A control plane on loopback plays the server.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest

from mctl.cli import main as cli
from mctl.common import rpc
from mctl.v1 import control_pb2, control_pb2_grpc, types_pb2


class Deleting(control_pb2_grpc.ControlPlaneServicer):
    """Deletes "big"; each ListWorkloads then shows the next of `present` (None: fail)."""

    def __init__(self) -> None:
        self.present: list[int | None] = []
        self.lock = threading.Lock()

    def Delete(self, request, context):
        return control_pb2.DeleteResponse(results=[
            control_pb2.DeleteResult(namespace=r.namespace, name=r.name, found=True)
            for r in request.workloads])

    def ListWorkloads(self, request, context):
        with self.lock:
            now = self.present.pop(0) if len(self.present) > 1 else self.present[0]
        if now is None:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "busy")
        out = control_pb2.WorkloadList()
        if now:
            w = types_pb2.Workload()
            w.metadata.namespace, w.metadata.name = "default", "big"
            w.metadata.deletion_requested = True
            out.items.append(w)
            out.summaries.add(present=now)
        return out


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Deleting]]:
    servicer = Deleting()
    s = rpc.make_server(max_workers=2)
    control_pb2_grpc.add_ControlPlaneServicer_to_server(servicer, s)
    port = rpc.bind(s, "127.0.0.1:0")
    s.start()
    yield f"127.0.0.1:{port}", servicer
    s.stop(grace=None)


def delete(capsys, address: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        cli.main(["--server", address, "--insecure", "delete", "workload", "big",
                  "--timeout", "0.25"])
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


def test_a_slow_delete_that_progresses_is_waited_for(server, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("MCTL_HOME", str(tmp_path))
    address, servicer = server
    # Each poll is 0.1 s apart: this takes longer than --timeout in all.
    servicer.present = [6, 5, None, 4, None, 3, 3, 2, 1, 0]
    assert delete(capsys, address) == (0, "workload/big deleted\n", "")


def test_a_stalled_delete_says_it_was_requested(server, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("MCTL_HOME", str(tmp_path))
    address, servicer = server
    servicer.present = [7, 7]
    code, out, err = delete(capsys, address)
    assert (code, out) == (1, "workload/big deleted\n")
    assert err == ("mctl: deletion of big was requested, but 7 replicas were still stopping"
                   " after 0.25s without progress (they are removed in the background:"
                   " mctl get replicas)\n")

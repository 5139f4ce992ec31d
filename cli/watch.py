"""`mctl get KIND -w`: the list once, then each row that changes, from a server stream.

The scheduler sends the current objects, then every change its etcd watch
brings (scheduler/watchstream.py); nothing is polled. As with `kubectl get
-w`, the table is printed once with its header and then one row per
change, a deleted object's row as it last was; with `-o json|yaml`, the
list as `get` prints it, then one document per change.

A stream ends when its scheduler does (a leader change, a restart) or when
this client reads slower than changes come. The CLI then watches again, on
any scheduler of the configured list (each has the cache), and compares
what the new stream lists with what it has shown: an object shown at the
same version is skipped, a changed one printed, one that is gone printed as
deleted. So a reconnect prints no duplicates and loses no change. It gives
up after RECONNECT_SECONDS without a working stream.
"""

from __future__ import annotations

import argparse
import time

import grpc

from mctl.common import reasons
from mctl.v1 import control_pb2, control_pb2_grpc

from . import output
from .client import CliError, rpc_error, stub

# How long the CLI goes on trying to watch again with no stream working.
RECONNECT_SECONDS = 60.0
# The pause before watching again: none the first time (another scheduler
# is likely there), then growing from the first to the last.
BACKOFF_SECONDS = (0.2, 2.0)


def pause(attempt: int) -> float:
    """How long to wait before attempt `attempt` (0 = the first) to watch again."""
    low, high = BACKOFF_SECONDS
    return 0.0 if attempt == 0 else min(high, low * (2 ** (attempt - 1)))

Key = tuple[str, str]


def key_of(kind: str, change: control_pb2.WatchChange) -> Key:
    if kind == "workloads":
        return change.workload.metadata.namespace, change.workload.metadata.name
    if kind == "replicas":
        return change.replica.metadata.namespace, change.replica.metadata.name
    return "", change.node.name


def listing(kind: str, changes: list[control_pb2.WatchChange]
            ) -> control_pb2.WorkloadList | control_pb2.ReplicaList | control_pb2.NodeList:
    """The changes as the List reply of their kind, for output's renderers."""
    if kind == "workloads":
        return control_pb2.WorkloadList(items=[c.workload for c in changes],
                                        summaries=[c.summary for c in changes])
    if kind == "replicas":
        return control_pb2.ReplicaList(items=[c.replica for c in changes],
                                       usage=[c.usage for c in changes])
    return control_pb2.NodeList(items=[c.node for c in changes],
                                allocated=[c.allocated for c in changes],
                                usage=[c.usage for c in changes],
                                replicas=[c.replicas for c in changes])


def resync(shown: dict[Key, control_pb2.WatchChange],
           listed: dict[Key, control_pb2.WatchChange]) -> list[control_pb2.WatchChange]:
    """What a new stream's list changes in what was shown: new, changed, then gone rows.

    Updates `shown` to the list.
    """
    out = []
    for key, change in sorted(listed.items()):
        before = shown.get(key)
        if before is None or before.version != change.version:
            out.append(change)
    for key in sorted(shown.keys() - listed.keys()):
        gone = control_pb2.WatchChange()
        gone.CopyFrom(shown[key])
        gone.type = control_pb2.WATCH_CHANGE_TYPE_DELETED
        out.append(gone)
    shown.clear()
    shown.update(listed)
    return out


def resumable(e: grpc.RpcError) -> bool:
    """Whether watching again may work: the scheduler went away or cut a slow client off."""
    if not isinstance(e, grpc.Call):
        return False
    code = e.code()
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return reasons.of(e) == reasons.WATCH_FELL_BEHIND
    # UNAVAILABLE: nobody answers (yet), or its store is away; CANCELLED or
    # INTERNAL: the stream was cut as the scheduler stopped.
    return code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                    grpc.StatusCode.INTERNAL)


class Printer:
    """Prints rows as `get` does: the header once, then rows; or documents."""

    def __init__(self, kind: str, args: argparse.Namespace) -> None:
        self.kind = kind
        self.args = args
        self.header_printed = False
        self.documents = 0
        # Each object's cells as last printed: a change that moves nothing the
        # table shows (a status message, a readiness probe's time) prints no
        # row that would look like the same one twice.
        self.cells: dict[Key, tuple[str, ...]] = {}

    def rows(self, changes: list[control_pb2.WatchChange]) -> None:
        if self.args.output not in ("json", "yaml"):
            changes = self._visible(changes)
        if not changes:
            return
        resp = listing(self.kind, changes)
        fmt = self.args.output
        if fmt in ("json", "yaml"):
            docs = [output.documents(listing(self.kind, [c]), fmt) for c in changes] \
                if self.documents else [output.documents(resp, fmt)]
            for doc in docs:
                if fmt == "yaml" and self.documents:
                    print("---")
                print(doc)
                self.documents += 1
        else:
            text = self._table(resp)
            lines = text.split("\n")
            print("\n".join(lines if not self.header_printed else lines[1:]))
            self.header_printed = True
        print(end="", flush=True)

    def _visible(self, changes: list[control_pb2.WatchChange]) -> list[control_pb2.WatchChange]:
        """The changes whose row differs from the object's last printed one (deletions all)."""
        out = []
        for c in changes:
            key = key_of(self.kind, c)
            if c.type == control_pb2.WATCH_CHANGE_TYPE_DELETED:
                self.cells.pop(key, None)
                out.append(c)
                continue
            cells = tuple(self._table(listing(self.kind, [c])).split("\n")[1].split())
            if self.cells.get(key) != cells:
                self.cells[key] = cells
                out.append(c)
        return out

    def _table(self, resp: control_pb2.WorkloadList | control_pb2.ReplicaList
               | control_pb2.NodeList) -> str:
        headers, rows = output.rows(resp, self.args.output == "wide", self.args.all_namespaces)
        # As `get --show-labels`: the column is added unless the table has one
        # (nodes' wide table does).
        if getattr(self.args, "show_labels", False) and "LABELS" not in headers:
            headers.append("LABELS")
            for row, labels in zip(rows, output.labels(resp), strict=True):
                row.append(labels)
        return output.table(headers, rows)


def watch(args: argparse.Namespace, kind: str, namespace: str, name: str,
          selector: str = "") -> int:
    """Runs `get KIND [NAME] [-l SELECTOR] -w` until interrupted (or it cannot be resumed)."""
    s: control_pb2_grpc.ControlPlaneStub = stub(args)
    request = control_pb2.WatchObjectsRequest(kind=kind, namespace=namespace, name=name,
                                              label_selector=selector)
    printer = Printer(kind, args)
    shown: dict[Key, control_pb2.WatchChange] | None = None   # None: nothing listed yet
    failing_since: float | None = None
    attempt = 0
    while True:
        listed: dict[Key, control_pb2.WatchChange] = {}
        synced = False
        try:
            for message in s.WatchObjects(request, timeout=None):
                if not synced:
                    for c in message.changes:
                        listed[key_of(kind, c)] = c
                    if not message.synced:
                        continue
                    synced, failing_since, attempt = True, None, 0
                    if shown is None:
                        if name and not listed:
                            raise CliError(f"{kind[:-1]} {name} not found"
                                           + (f" in namespace {namespace}" if namespace else ""))
                        shown = {}
                    printer.rows(resync(shown, listed))
                    continue
                for c in message.changes:
                    assert shown is not None
                    key = key_of(kind, c)
                    if c.type == control_pb2.WATCH_CHANGE_TYPE_DELETED:
                        shown.pop(key, None)
                    else:
                        shown[key] = c
                printer.rows(list(message.changes))
        except grpc.RpcError as e:
            # Before a first list, as kubectl: nothing to resume, say why at once.
            if shown is None or not resumable(e):
                raise rpc_error(args, e) from None
            why = str(rpc_error(args, e))
        else:
            why = "the server ended it"
        # Ended (by the server or an error): watch again, after a pause.
        now = time.monotonic()
        if not synced:
            failing_since = failing_since if failing_since is not None else now
            if now - failing_since > RECONNECT_SECONDS:
                raise CliError(f"the watch stream ended and could not be resumed for"
                               f" {RECONNECT_SECONDS:.0f}s: {why}")
        time.sleep(pause(attempt))
        attempt += 1

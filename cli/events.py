"""`mctl events [-w] [-n NS | -A] [--for KIND/NAME]`: what happened, oldest first.

The scheduler keeps events for about an hour (scheduler/events.py). This
lists them as `kubectl events` does (LAST SEEN, TYPE, REASON, OBJECT,
MESSAGE); with -w it goes on with each new one as the scheduler's watch
brings it (scheduler/watchstream.py). Events of nodes belong to no namespace
and show in every namespace's list, since a node's trouble is every
replica's on it.

A follow stream that ends (its scheduler stopped, a leader change) is
resumed on any scheduler: the stored events are listed again and the ones
already printed, known by their ids, are skipped. The ids kept for that are
bounded (SEEN_LIMIT): older ones have left the scheduler's store by then.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import deque
from typing import Any

import grpc

from mctl.common import names
from mctl.v1 import control_pb2, types_pb2

from . import output, watch
from .client import CliError, UsageError, check_name, rpc_error, stub

# Event ids remembered for resuming; the store keeps at most 20 per object.
SEEN_LIMIT = 100_000

KINDS = {"workload": "Workload", "workloads": "Workload", "wl": "Workload",
         "replica": "Replica", "replicas": "Replica", "rep": "Replica",
         "node": "Node", "nodes": "Node", "no": "Node"}


def parse_for(text: str) -> tuple[str, str]:
    """--for KIND/NAME -> (the event kind, the name)."""
    kind, sep, name = text.partition("/")
    if not sep or kind.lower() not in KINDS:
        raise UsageError(f"--for: want workload/NAME, replica/NAME or node/NAME,"
                         f" not {names.quote(text)}")
    check_name("--for name", name)
    return KINDS[kind.lower()], name


class Seen:
    """Ids of events printed, the oldest forgotten past a bound."""

    def __init__(self, limit: int = SEEN_LIMIT) -> None:
        self.limit = limit
        self._order: deque[str] = deque()
        self._ids: set[str] = set()

    def add(self, ident: str) -> bool:
        """False if `ident` was seen already."""
        if ident in self._ids:
            return False
        self._ids.add(ident)
        self._order.append(ident)
        if len(self._order) > self.limit:
            self._ids.discard(self._order.popleft())
        return True


def event_dict(e: types_pb2.Event) -> dict[str, Any]:
    doc: dict[str, Any] = {"kind": e.kind, "name": e.name}
    if e.namespace:
        doc["namespace"] = e.namespace
    doc |= {"type": e.type, "reason": e.reason, "message": e.message,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.unix_ms / 1000)),
            "source": e.source}
    return doc


def table(items: list[types_pb2.Event], all_ns: bool) -> str:
    headers = (["NAMESPACE"] if all_ns else []) + ["LAST SEEN", "TYPE", "REASON", "OBJECT",
                                                    "MESSAGE"]
    rows = [([e.namespace or "<none>"] if all_ns else []) + [
        output.age(e.unix_ms), e.type, e.reason, f"{e.kind.lower()}/{e.name}", e.message]
        for e in items]
    return output.table(headers, rows)


class Printer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.header_printed = False
        self.documents = 0

    def events(self, items: list[types_pb2.Event]) -> None:
        if not items:
            return
        fmt = self.args.output
        if fmt == "json":
            for e in items:
                print(json.dumps(event_dict(e)))
        elif fmt == "yaml":
            import yaml
            for e in items:
                if self.documents:
                    print("---")
                print(yaml.safe_dump(event_dict(e), sort_keys=False).rstrip())
                self.documents += 1
        else:
            lines = table(items, self.args.all_namespaces).split("\n")
            print("\n".join(lines if not self.header_printed else lines[1:]))
            self.header_printed = True
        print(end="", flush=True)


def cmd_events(args: argparse.Namespace) -> int:
    kind, name = parse_for(args.for_) if args.for_ else ("", "")
    namespace = "" if args.all_namespaces or kind == "Node" else args.namespace
    request = control_pb2.WatchEventsRequest(kind=kind, namespace=namespace, name=name,
                                             follow=args.watch)
    s = stub(args)
    printer = Printer(args)
    seen = Seen()
    failing_since: float | None = None
    attempt = 0
    listed_once = False
    while True:
        synced = False
        try:
            for message in s.WatchEvents(request, timeout=None if args.watch else 30):
                fresh = [e for i, e in zip(message.ids, message.items, strict=False)
                         if seen.add(i)]
                printer.events(fresh)
                if message.synced:
                    synced, failing_since, attempt = True, None, 0
                    if not listed_once and not printer.header_printed and not args.watch \
                            and args.output == "table":
                        where = "" if not namespace else f" in namespace {namespace}"
                        print(f"No events found{where}.")
                    listed_once = True
        except grpc.RpcError as e:
            if not args.watch or not listed_once or not watch.resumable(e):
                raise rpc_error(args, e) from None
            why = str(rpc_error(args, e))
        else:
            why = "the server ended it"
        if not args.watch:
            return 0
        now = time.monotonic()
        if not synced:
            failing_since = failing_since if failing_since is not None else now
            if now - failing_since > watch.RECONNECT_SECONDS:
                raise CliError(f"the event stream ended and could not be resumed for"
                               f" {watch.RECONNECT_SECONDS:.0f}s: {why}")
        time.sleep(watch.pause(attempt))
        attempt += 1


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ev = sub.add_parser(
        "events", help="recent events (-w: and new ones as they happen)",
        epilog="examples: mctl events -A | mctl events -w --for replica/web-x2k9q",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("-w", "--watch", action="store_true", help="go on with new events")
    ev.add_argument("-A", "--all-namespaces", action="store_true")
    ev.add_argument("--for", dest="for_", metavar="KIND/NAME",
                    help="only the events of one workload, replica or node")
    ev.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table",
                    help="json: one object per line; yaml: one document per event")
    ev.set_defaults(fn=cmd_events)

"""`mctl logs REPLICA | workload/NAME [-f] [--tail N] [--since T] [--timestamps] [--previous]`.

A replica's log comes from its node through the scheduler. For a workload,
the logs of all its replicas are merged, each line prefixed with its replica
(what users of the big orchestrators reach for stern or `kubectl logs -l`
to get): without -f, in time order; with -f, as lines arrive.

The log holds each line's time (the CRI format, common/containerlog.py), so
as with kubectl: `--since` keeps the lines from a time on (a duration back
from now, `5m`, `1h30m`, or an RFC3339 time), `--timestamps` prints each
line's time first, and `--previous` reads the log of the replica's
container before its latest restart (the node keeps one: agent/previouslog.py).
"""

from __future__ import annotations

import argparse
import datetime
import heapq
import re
import sys
import threading
import time
from collections.abc import Iterator

import grpc

from mctl.common.names import quote
from mctl.v1 import control_pb2, control_pb2_grpc

from .client import CliError, check_name, list_all, rpc_error, stub


def stream(s: control_pb2_grpc.ControlPlaneStub, args: argparse.Namespace,
           replica: str) -> Iterator[control_pb2.LogLine]:
    request = control_pb2.LogsRequest(namespace=args.namespace, replica=replica,
                                      follow=args.follow, tail=args.tail,
                                      since_unix_ns=args.since_ns,
                                      previous=args.previous)
    for chunk in s.Logs(request, timeout=None if args.follow else 30):
        yield from chunk.lines


def cmd_logs(args: argparse.Namespace) -> int:
    s = stub(args)
    out = sys.stdout.buffer
    kind, _, name = args.target.rpartition("/")
    if kind and kind not in ("workload", "workloads", "wl", "replica", "rep"):
        raise CliError(f"logs of {quote(kind)}: give a replica name or workload/NAME")
    check_name("workload name" if kind else "replica name", name)
    # Once: every replica of a workload is read from the same instant on.
    args.since_ns = args.since.resolve() if args.since else 0
    if kind in ("", "replica", "rep"):
        try:
            for line in stream(s, args, name):
                out.write(stamp(args, line) + line.data + b"\n")
                if args.follow:
                    out.flush()
        except grpc.RpcError as e:
            raise rpc_error(args, e) from None
        out.flush()
        return 0
    reps = list_all(args, s.ListReplicas,
                control_pb2.ListRequest(namespace=args.namespace, workload=name))
    names = [r.metadata.name for r in reps.items if r.node]
    if not names:
        raise CliError(f"workload {name} has no placed replicas in namespace {args.namespace}")
    width = max(len(n) for n in names)
    prefixes = {n: f"[{n:<{width}}] ".encode() for n in names}
    if args.follow:
        return follow_all(s, args, names, prefixes)
    streams = []
    for n in names:
        try:
            streams.append([(line.unix_ns, n, stamp(args, line) + line.data)
                            for line in stream(s, args, n)])
        except grpc.RpcError as e:
            print(f"mctl: {n}: {rpc_error(args, e)}", file=sys.stderr)
    for _, n, data in heapq.merge(*streams):
        out.write(prefixes[n] + data + b"\n")
    out.flush()
    return 0


def follow_all(s: control_pb2_grpc.ControlPlaneStub, args: argparse.Namespace,
               names: list[str], prefixes: dict[str, bytes]) -> int:
    out = sys.stdout.buffer
    lock = threading.Lock()

    def pump(n: str) -> None:
        try:
            for line in stream(s, args, n):
                with lock:
                    out.write(prefixes[n] + stamp(args, line) + line.data + b"\n")
                    out.flush()
        except grpc.RpcError as e:
            with lock:
                print(f"mctl: {n}: {rpc_error(args, e)}", file=sys.stderr)
    threads = [threading.Thread(target=pump, args=(n,), daemon=True) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.5)      # wakes for ^C
    return 0


def stamp(args: argparse.Namespace, line: control_pb2.LogLine) -> bytes:
    """--timestamps: the line's time in RFC3339 with nanoseconds, UTC, and a space."""
    if not args.timestamps:
        return b""
    secs, nanos = divmod(line.unix_ns, 1_000_000_000)
    return b"%s.%09dZ " % (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)).encode(), nanos)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


class Since:
    """--since: a time, or a duration back from whenever the request is made."""

    def __init__(self, unix_ns: int = 0, ago_seconds: float = 0.0) -> None:
        self.unix_ns = unix_ns
        self.ago_seconds = ago_seconds

    def resolve(self, now_ns: int | None = None) -> int:
        """The request's since_unix_ns (at least 1: 0 would mean "all")."""
        if self.unix_ns:
            return self.unix_ns
        now = now_ns if now_ns is not None else time.time_ns()
        return max(1, now - int(self.ago_seconds * 1e9))


def parse_since(text: str) -> Since:
    """`5m`, `1h30m`, `90s`, `1.5h`, `500ms`, or an RFC3339 time with its zone."""
    if re.fullmatch(f"(?:{_DURATION.pattern})+", text):
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION.findall(text))
        if seconds <= 0:
            raise argparse.ArgumentTypeError(f"must be longer than 0, not {quote(text)}")
        # Longer ago than any log is old (or than a float holds): every line.
        return Since(ago_seconds=min(seconds, 1e12))
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"want a duration (5s, 2m, 1h30m) or an RFC3339 time"
                                         f" (2026-01-02T15:04:05Z), not {quote(text)}") from None
    if when.tzinfo is None or "T" not in text.upper():
        raise argparse.ArgumentTypeError(f"an RFC3339 time has a date, a time and a zone"
                                         f" (Z or +hh:mm): {quote(text)}")
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    delta = when - epoch
    unix_ns = (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    if not 0 < unix_ns < 1 << 63:      # the request's int64 of nanoseconds
        raise argparse.ArgumentTypeError(f"must be between 1970 and 2262, not {quote(text)}")
    return Since(unix_ns=unix_ns)


def tail_lines(text: str) -> int:
    """--tail: -1 (all), or a count that fits the request's int32."""
    value = int(text)
    if not -1 <= value < 1 << 31:
        raise argparse.ArgumentTypeError(f"must be -1 (all) or 0 to {(1 << 31) - 1},"
                                         f" not {value}")
    return value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lg = sub.add_parser("logs", help="a replica's stdout and stderr, or a workload's merged",
                        epilog="examples: mctl logs web-x2k9q --since 5m --timestamps |"
                               " mctl logs -f workload/web --tail 10 | mctl logs -p web-x2k9q")
    lg.add_argument("target", metavar="REPLICA|workload/NAME")
    lg.add_argument("-f", "--follow", action="store_true")
    lg.add_argument("--tail", type=tail_lines, default=-1, help="lines per replica (-1: all)")
    lg.add_argument("--since", type=parse_since, default=None, metavar="DURATION|TIME",
                    help="only lines from this long ago (5m, 1h30m) or this RFC3339 time on")
    lg.add_argument("--timestamps", action="store_true",
                    help="start each line with its time (RFC3339, UTC)")
    lg.add_argument("-p", "--previous", action="store_true",
                    help="the log of the replica's container before its latest restart")
    lg.set_defaults(fn=cmd_logs)

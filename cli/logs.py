"""`mctl logs REPLICA | workload/NAME [-f] [--tail N]`.

A replica's log comes from its node through the scheduler. For a workload,
the logs of all its replicas are merged, each line prefixed with its replica
(what users of the big orchestrators reach for stern or `kubectl logs -l`
to get): without -f, in time order; with -f, as lines arrive.
"""

from __future__ import annotations

import argparse
import heapq
import sys
import threading
from collections.abc import Iterator

import grpc

from mctl.common.names import quote
from mctl.v1 import control_pb2, control_pb2_grpc

from .client import CliError, check_name, list_all, rpc_error, stub


def stream(s: control_pb2_grpc.ControlPlaneStub, args: argparse.Namespace,
           replica: str) -> Iterator[control_pb2.LogLine]:
    request = control_pb2.LogsRequest(namespace=args.namespace, replica=replica,
                                      follow=args.follow, tail=args.tail)
    for chunk in s.Logs(request, timeout=None if args.follow else 30):
        yield from chunk.lines


def cmd_logs(args: argparse.Namespace) -> int:
    s = stub(args)
    out = sys.stdout.buffer
    kind, _, name = args.target.rpartition("/")
    if kind and kind not in ("workload", "workloads", "wl", "replica", "rep"):
        raise CliError(f"logs of {quote(kind)}: give a replica name or workload/NAME")
    check_name("workload name" if kind else "replica name", name)
    if kind in ("", "replica", "rep"):
        try:
            for line in stream(s, args, name):
                out.write(line.data + b"\n")
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
            streams.append([(line.unix_ns, n, line.data) for line in stream(s, args, n)])
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
                    out.write(prefixes[n] + line.data + b"\n")
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


def tail_lines(text: str) -> int:
    """--tail: -1 (all), or a count that fits the request's int32."""
    value = int(text)
    if not -1 <= value < 1 << 31:
        raise argparse.ArgumentTypeError(f"must be -1 (all) or 0 to {(1 << 31) - 1},"
                                         f" not {value}")
    return value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lg = sub.add_parser("logs", help="a replica's stdout and stderr, or a workload's merged")
    lg.add_argument("target", metavar="REPLICA|workload/NAME")
    lg.add_argument("-f", "--follow", action="store_true")
    lg.add_argument("--tail", type=tail_lines, default=-1, help="lines per replica (-1: all)")
    lg.set_defaults(fn=cmd_logs)

"""`mctl cordon | uncordon | drain NODE`: keep new replicas off a node, or empty it."""

from __future__ import annotations

import argparse
import sys
import time

from mctl.common.phases import is_terminal
from mctl.v1 import control_pb2


def cmd_cordon(args: argparse.Namespace) -> int:
    from .client import call, check_name, stub
    check_name("node name", args.node)
    cordoned = args.command == "cordon"
    resp = call(args, stub(args).Cordon,
                control_pb2.CordonRequest(node=args.node, cordoned=cordoned))
    word = "cordoned" if cordoned else "uncordoned"
    print(f"node/{args.node} {word}" if resp.changed else f"node/{args.node} already {word}")
    return 0


def cmd_drain(args: argparse.Namespace) -> int:
    from .client import CliError, call, check_name, list_all, stub
    check_name("node name", args.node)
    s = stub(args)
    resp = call(args, s.Drain, control_pb2.DrainRequest(node=args.node))
    print(f"node/{args.node} cordoned")
    for ref in resp.evicted:
        print(f"replica/{ref.name} evicted")
    if not args.wait:
        return 0
    # Like kubectl drain: return once nothing but finished replicas is left.
    deadline = time.monotonic() + args.timeout
    shown = -1
    while True:
        reps = list_all(args, s.ListReplicas, control_pb2.ListRequest())
        left = [r.metadata.name for r in reps.items
                if r.node == args.node and not is_terminal(r.status.phase)]
        if not left:
            print(f"node/{args.node} drained")
            return 0
        if len(left) != shown and sys.stderr.isatty():
            print(f"waiting for {len(left)} replicas to leave: {', '.join(left[:5])}"
                  + (" ..." if len(left) > 5 else ""), file=sys.stderr)
            shown = len(left)
        if time.monotonic() > deadline:
            raise CliError(f"timed out after {args.timeout:.0f}s; still on node "
                           f"{args.node}: {', '.join(left)}")
        time.sleep(0.2)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, text in (("cordon", "keep new replicas off a node"),
                       ("uncordon", "let new replicas onto a node again")):
        c = sub.add_parser(name, help=text)
        c.add_argument("node")
        c.set_defaults(fn=cmd_cordon)
    d = sub.add_parser("drain", help="cordon a node and move its replicas elsewhere")
    d.add_argument("node")
    d.add_argument("--wait", default=True, action=argparse.BooleanOptionalAction,
                   help="wait until its replicas are gone (default)")
    d.add_argument("--timeout", type=float, default=120.0)
    d.set_defaults(fn=cmd_drain)

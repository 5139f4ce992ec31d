"""`mctl debug node NODE [TOPIC]`: ask one agent directly what its node looks like.

The CLI dials the agent itself (with the admin certificate; agents accept
no other callers but the scheduler), so it works while the scheduler is
busy or down when given --address. TOPIC is containers (default), cgroups,
mounts, network, events, drift (what the agent found changed in the kernel
behind its back and repaired: counts, last time, the latest repairs), services
(the virtual IPs the node balances, their endpoints ready or not, DNS names), or all.
"""

from __future__ import annotations

import argparse

import grpc

from mctl.common import pki, rpc, tls
from mctl.v1 import agent_pb2, agent_pb2_grpc, control_pb2

from . import config
from .client import CliError, call, rpc_error, stub

TOPICS = ("containers", "cgroups", "mounts", "network", "events", "drift", "services",
          "volumes")


def cmd_debug(args: argparse.Namespace) -> int:
    topics = TOPICS if args.topic == "all" else (args.topic,)
    if args.topic != "all" and args.topic not in TOPICS:
        raise CliError(f"unknown topic {args.topic!r}: use {', '.join(TOPICS)} or all")
    address = args.address
    if not address:
        nodes = call(args, stub(args).ListNodes, control_pb2.ListRequest(name=args.node))
        if not nodes.items:
            raise CliError(f"node {args.node} not found")
        address = nodes.items[0].address
    try:
        credentials = config.credentials(args)
    except tls.TLSError as e:
        raise CliError(str(e)) from None
    args.tls_on = credentials is not None
    args.server_address = f"node {args.node} at {address}"
    agent = agent_pb2_grpc.AgentStub(
        rpc.make_channel(address, credentials, pki.node_server_name(args.node)))
    for topic in topics:
        if len(topics) > 1:
            print(f"### {topic}")
        try:
            reply = agent.Inspect(agent_pb2.InspectRequest(topic=topic, limit=args.limit),
                                  timeout=15)
        except grpc.RpcError as e:
            raise rpc_error(args, e) from None
        print("\n".join(reply.lines))
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = sub.add_parser("debug", help="talk to one node's agent directly")
    what = d.add_subparsers(dest="what", metavar="node")
    what.required = True
    n = what.add_parser("node", help="a node as its agent sees it")
    n.add_argument("node")
    n.add_argument("topic", nargs="?", default="containers",
                   help=f"{' | '.join(TOPICS)} | all (default: containers)")
    n.add_argument("--limit", type=int, default=50,
                   help="events, drift: how many recent lines")
    n.add_argument("--address", default="",
                   help="the agent's host:port (default: asked from the scheduler)")
    n.set_defaults(fn=cmd_debug)

"""`mctl version [--client] [-o json|yaml]`: this CLI's version and the server's.

As `kubectl version`: the client's always (without a connection when
--client is given), then the version of the scheduler that answered, from
ClusterInfo. A scheduler too old to say gives "unknown".
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from typing import Any

from mctl.common.version import version
from mctl.v1 import control_pb2

from .client import call, stub


def client_info() -> dict[str, str]:
    return {"version": version(), "python": platform.python_version(),
            "platform": f"{sys.platform}/{platform.machine()}"}


def cmd_version(args: argparse.Namespace) -> int:
    doc: dict[str, Any] = {"clientVersion": client_info()}
    if not args.client:
        info: control_pb2.ClusterInfoResponse = call(args, stub(args).ClusterInfo,
                                                     control_pb2.ClusterInfoRequest())
        doc["serverVersion"] = {"version": info.server_version or "unknown",
                                "servedBy": info.served_by, "leader": info.leader}
    if args.output == "json":
        print(json.dumps(doc, indent=2))
    elif args.output == "yaml":
        import yaml
        print(yaml.safe_dump(doc, sort_keys=False).rstrip())
    else:
        print(f"Client Version: {doc['clientVersion']['version']}")
        if "serverVersion" in doc:
            print(f"Server Version: {doc['serverVersion']['version']}")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    v = sub.add_parser("version", help="the versions of this mctl and of the server",
                       epilog="examples: mctl version | mctl version --client -o json")
    v.add_argument("--client", action="store_true",
                   help="only this mctl's version, without asking the server")
    v.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table",
                   help="table: two lines (the default)")
    v.set_defaults(fn=cmd_version)

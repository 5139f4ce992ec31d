"""mctl-scheduler: the control plane. API server, placement and reconcile, on etcd.

    mctl-scheduler --etcd 127.0.0.1:2379 --listen 127.0.0.1:7070

It keeps nothing a restart could lose: all state is in etcd under --prefix.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from mctl.common import logs, rpc
from mctl.v1 import control_pb2_grpc, node_pb2_grpc

from .api import ControlPlane, NodeService, UsageCache
from .controller import Controller
from .store import Store

log = logging.getLogger("mctl.scheduler")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mctl-scheduler", description=__doc__.split("\n")[0])
    p.add_argument("--etcd", default=os.environ.get("MCTL_ETCD", "127.0.0.1:2379"),
                   help="etcd client endpoint host:port")
    p.add_argument("--prefix", default="/mctl/", help="etcd key prefix for all state")
    p.add_argument("--listen", default="127.0.0.1:7070", help="address of the API")
    p.add_argument("--log-file", default=None)
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logs.configure("scheduler", level=args.log_level, path=args.log_file)
    store = Store(args.etcd, args.prefix)
    controller = Controller(store)
    usage = UsageCache()
    server = rpc.make_server(max_workers=32)
    control_pb2_grpc.add_ControlPlaneServicer_to_server(
        ControlPlane(store, controller, usage), server)
    node_pb2_grpc.add_NodeServiceServicer_to_server(NodeService(store, controller, usage), server)
    try:
        port = rpc.bind(server, args.listen)
    except OSError as e:
        print(f"mctl-scheduler: {e}", file=sys.stderr)
        sys.exit(1)
    server.start()
    log.info("scheduler serving address=%s:%d etcd=%s prefix=%s", rpc.host_of(args.listen),
             port, args.etcd, args.prefix)
    controller.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("scheduler stopping")
    server.stop(grace=1)
    controller.close()
    store.close()


if __name__ == "__main__":
    main()

"""mctl-scheduler: the control plane. API server, placement and reconcile, on etcd.

    mctl-scheduler --etcd 127.0.0.1:2379 --listen 127.0.0.1:7070 \
        --tls-ca ca.crt --tls-cert scheduler.crt --tls-key scheduler.key \
        --etcd-ca etcd/ca.crt --etcd-cert etcd/scheduler.crt --etcd-key etcd/scheduler.key

It keeps nothing a restart could lose: all state is in etcd under --prefix.
With TLS, only admins may call the control plane and only agents the node
API, each for its own node (access.py); --insecure turns that off.
--etcd-ca/--etcd-cert/--etcd-key make it dial etcd over mutual TLS with its
etcd client certificate (etcd trusts only its own CA); without them it dials
etcd in plain text.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading

from mctl.common import health, logs, metrics, pki, rpc, sdnotify, skopeo, tls, validation
from mctl.common.authz import Authorizer
from mctl.v1 import control_pb2_grpc, node_pb2_grpc

from . import gauges, imagepin, leader, secretbox, subnets, vips
from .access import POLICY
from .api import ControlPlane, NodeService
from .cache import StateCache
from .controller import Controller
from .events import EventRecorder
from .leader import LeaderElector
from .nodes import (
    DEFAULT_NODE_GRACE_SECONDS,
    MAX_HEARTBEATS_PER_SECOND,
    MAX_HEARTBEATS_PER_SECOND_LIMIT,
    NODE_LEASE_TTL,
    NodeLeases,
)
from .store import EtcdTLS, Store, StoreUnavailable
from .usage import UsageCache
from .watchstream import WatchHub

log = logging.getLogger("mctl.scheduler")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mctl-scheduler", description=__doc__.split("\n")[0])
    p.add_argument("--etcd", default=os.environ.get("MCTL_ETCD", "127.0.0.1:2379"),
                   help="etcd's client endpoint host:port, or every member's, comma-separated "
                        "(calls fail over between them)")
    p.add_argument("--etcd-ca", default=os.environ.get("MCTL_ETCD_CA", ""), metavar="FILE",
                   help="the CA etcd's certificates are signed by; with --etcd-cert and "
                        "--etcd-key: talk to etcd over mutual TLS (default: plain text)")
    p.add_argument("--etcd-cert", default=os.environ.get("MCTL_ETCD_CERT", ""), metavar="FILE",
                   help="this scheduler's client certificate for etcd")
    p.add_argument("--etcd-key", default=os.environ.get("MCTL_ETCD_KEY", ""), metavar="FILE",
                   help="the key of --etcd-cert")
    p.add_argument("--prefix", default="/mctl/", help="etcd key prefix for all state")
    p.add_argument("--listen", default="127.0.0.1:7070", help="address of the API")
    p.add_argument("--id", default=None,
                   help="this scheduler's name in leader election (default: host/listen address)")
    p.add_argument("--node-grace", type=float, default=DEFAULT_NODE_GRACE_SECONDS,
                   metavar="SECONDS",
                   help="how long a node may be NotReady before its replicas move elsewhere")
    p.add_argument("--node-lease-ttl", type=int, default=NODE_LEASE_TTL, metavar="SECONDS",
                   help="a node is NotReady this long after its last heartbeat (agents "
                        "heartbeat 3 times per TTL); longer in clusters too large for "
                        "--max-heartbeats-per-second (beyond 300 nodes by default)")
    p.add_argument("--max-heartbeats-per-second", type=int, default=MAX_HEARTBEATS_PER_SECOND,
                   metavar="N",
                   help="heartbeats this scheduler takes per second at most, whatever the "
                        "cluster's size: beyond N x --node-lease-ttl / 3 nodes the lease "
                        "TTL grows with the node count (so does the time until a dead node "
                        "is NotReady: 10 s at 1,000 nodes, 50 s at 5,000 by default); "
                        "Nomad's max_heartbeats_per_second, 50 there")
    p.add_argument("--leader-ttl", type=int, default=leader.DEFAULT_TTL, metavar="SECONDS",
                   help="the leader's lease: a dead leader is replaced after this long")
    p.add_argument("--cluster-cidr", default=subnets.DEFAULT_CLUSTER_CIDR,
                   help="containers' addresses: each node gets a subnet of it; '' = no "
                        "container network")
    p.add_argument("--node-subnet-prefix", type=int, default=subnets.DEFAULT_NODE_PREFIX,
                   metavar="BITS", help="size of each node's subnet (default /24)")
    p.add_argument("--service-cidr", default=vips.DEFAULT_SERVICE_CIDR,
                   help="virtual IPs of workloads with ports (one each, balanced on every "
                        "node); must not overlap --cluster-cidr or the nodes' network; "
                        "'' = no services")
    p.add_argument("--max-replicas", type=int, default=validation.DEFAULT_MAX_REPLICAS,
                   metavar="N", help="the most replicas one workload may ask for (Apply "
                                     "refuses more)")
    p.add_argument("--max-cluster-replicas", type=int,
                   default=validation.DEFAULT_MAX_CLUSTER_REPLICAS, metavar="N",
                   help="the most replicas all workloads together may ask for (Apply "
                        "refuses an apply that would add past it)")
    p.add_argument("--host-port-min", type=int, default=validation.DEFAULT_HOST_PORT_MIN,
                   metavar="PORT", help="the lowest hostPort a workload may publish (lower "
                                        "ones are the node's own: ssh, DNS)")
    p.add_argument("--encryption-key-file", default=os.environ.get("MCTL_ENCRYPTION_KEY_FILE", ""),
                   metavar="FILE",
                   help="AES-256 key(s) that seal Secrets in etcd, 64 hex digits a line, mode"
                        " 0600; the first seals, all open (docs/secrets.md). Without it,"
                        " Secrets are refused")
    p.add_argument("--log-file", default=None)
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--log-format", choices=logs.FORMATS, default="text",
                   help="text (the default) or json: one object per line, the same keys")
    p.add_argument("--metrics-listen", default="", metavar="ADDR",
                   help="serve Prometheus metrics over HTTP on host:port (default: none); "
                        "docs/observability.md lists them")
    p.add_argument("--web-listen", default="", metavar="ADDR",
                   help="serve the read-only web view of the cluster on host:port (default: "
                        "none), to admins: their certificate over TLS or --web-token-file's "
                        "token (docs/webview.md)")
    p.add_argument("--web-token-file", default="", metavar="FILE",
                   help="the web view's bearer token, one line, mode 0600")
    skopeo.add_flags(p)
    tls.add_flags(p)
    return p


def etcd_credentials(ca: str, cert: str, key: str) -> EtcdTLS | None:
    """The --etcd-* files, all three or none, each readable; None: plain-text etcd."""
    given = {"--etcd-ca": ca, "--etcd-cert": cert, "--etcd-key": key}
    if not any(given.values()):
        return None
    missing = [flag for flag, path in given.items() if not path]
    if missing:
        raise ValueError(f"{', '.join(missing)} missing: etcd over TLS needs --etcd-ca, "
                         "--etcd-cert and --etcd-key")
    for flag, path in given.items():
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise ValueError(f"{flag} {path}: {e.strerror}") from None
    return EtcdTLS(ca, cert, key)


def web_view_token(args: argparse.Namespace, credentials: tls.TLSConfig | None) -> str | None:
    """--web-token-file's token after checking the --web-* flags (exits on bad ones)."""
    # Imported here: a scheduler without --web-listen loads nothing of the view.
    from .web import access as web_access
    try:
        web_access.parse_address(args.web_listen)
        token = (web_access.read_token_file(args.web_token_file)
                 if args.web_token_file else None)
    except web_access.WebAccessError as e:
        print(f"mctl-scheduler: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        print(f"mctl-scheduler: --web-token-file {args.web_token_file}: {e.strerror or e}",
              file=sys.stderr)
        sys.exit(2)
    if token is None and credentials is None:
        print("mctl-scheduler: --web-listen needs --web-token-file or TLS credentials: the "
              "view is for admins only", file=sys.stderr)
        sys.exit(2)
    return token


def follow_cache(cache: StateCache, watches: WatchHub) -> None:
    """Has the cache tell `watches` of each change and event, after whoever it tells now."""
    on_change, on_history = cache.on_change, cache.on_history

    def changed() -> None:
        if on_change is not None:
            on_change()
        watches.changed()

    def history(stored: bytes) -> None:
        if on_history is not None:
            on_history(stored)
        watches.history(stored)
    cache.on_change, cache.on_history = changed, history


def wait_for_cache(cache: StateCache, stop: threading.Event) -> bool:
    """Loads the watch cache, retrying while etcd is away; False if stopped first."""
    delay = 0.2
    while not stop.is_set():
        try:
            cache.snapshot()
            return True
        except StoreUnavailable as e:
            log.warning("not ready, state cache not loaded: %s; retrying in %.1fs", e, delay)
            stop.wait(delay)
            delay = min(delay * 2, 5.0)
    return False


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logs.configure("scheduler", level=args.log_level, path=args.log_file, fmt=args.log_format)
    try:
        credentials = tls.from_flags(args.tls_ca, args.tls_cert, args.tls_key, args.insecure)
        if credentials is not None:
            credentials.require("scheduler")
    except tls.TLSError as e:
        print(f"mctl-scheduler: {e}", file=sys.stderr)
        sys.exit(1)
    if args.node_grace < 0 or args.leader_ttl < 1 or args.node_lease_ttl < 2:
        print("mctl-scheduler: --node-grace must be >= 0, --leader-ttl >= 1 and "
              "--node-lease-ttl >= 2", file=sys.stderr)
        sys.exit(2)
    if not 1 <= args.max_heartbeats_per_second <= MAX_HEARTBEATS_PER_SECOND_LIMIT:
        print("mctl-scheduler: --max-heartbeats-per-second must be between 1 and "
              f"{MAX_HEARTBEATS_PER_SECOND_LIMIT}", file=sys.stderr)
        sys.exit(2)
    if args.max_replicas < 0 or args.max_cluster_replicas < 0:
        print("mctl-scheduler: --max-replicas and --max-cluster-replicas must be >= 0",
              file=sys.stderr)
        sys.exit(2)
    if args.metrics_listen:
        try:
            metrics.parse_address(args.metrics_listen)
        except ValueError as e:
            print(f"mctl-scheduler: {e}", file=sys.stderr)
            sys.exit(2)
    if args.web_token_file and not args.web_listen:
        # Said rather than ignored: a token file alone looks like a web view
        # that was meant to be on.
        print("mctl-scheduler: --web-token-file needs --web-listen (the web view is off"
              " without it)", file=sys.stderr)
        sys.exit(2)
    web_token = web_view_token(args, credentials) if args.web_listen else None
    if not 1 <= args.host_port_min <= 65536:
        print("mctl-scheduler: --host-port-min must be between 1 and 65536 (no hostPort)",
              file=sys.stderr)
        sys.exit(2)
    secret_box = None
    if args.encryption_key_file:
        try:
            secret_box = secretbox.load_key_file(args.encryption_key_file)
        except secretbox.SecretBoxError as e:
            print(f"mctl-scheduler: --encryption-key-file {e}", file=sys.stderr)
            sys.exit(2)
    if args.cluster_cidr:
        try:
            subnets.parse_cluster_cidr(args.cluster_cidr, args.node_subnet_prefix)
        except subnets.SubnetError as e:
            print(f"mctl-scheduler: {e}", file=sys.stderr)
            sys.exit(2)
    if args.service_cidr:
        try:
            vips.parse_service_cidr(args.service_cidr, {"--cluster-cidr": args.cluster_cidr})
        except vips.ServiceCIDRError as e:
            print(f"mctl-scheduler: {e}", file=sys.stderr)
            sys.exit(2)
    try:
        auth, cas = skopeo.checked_files(args)
    except ValueError as e:
        print(f"mctl-scheduler: {e}", file=sys.stderr)
        sys.exit(2)
    try:
        etcd_tls = etcd_credentials(args.etcd_ca, args.etcd_cert, args.etcd_key)
        store = Store(args.etcd, args.prefix, tls=etcd_tls)
    except ValueError as e:
        print(f"mctl-scheduler: {e}", file=sys.stderr)
        sys.exit(2)
    # Tags of registry images are resolved to digests on apply (imagepin.py).
    resolver = imagepin.Resolver(imagepin.PinConfig(
        auth_file=auth, ca_files=cas, insecure=frozenset(args.insecure_registry)))
    allocator = (subnets.SubnetAllocator(store, args.cluster_cidr, args.node_subnet_prefix)
                 if args.cluster_cidr else None)
    identity = args.id or f"{socket.gethostname()}/{args.listen}"
    events = EventRecorder(store, f"scheduler/{identity}")
    elector = LeaderElector(store, identity, ttl=args.leader_ttl)
    cache = StateCache(store)
    controller = Controller(store, tls=credentials, elector=elector, events=events,
                            node_grace_seconds=args.node_grace, cache=cache,
                            service_cidr=args.service_cidr, secret_box=secret_box)
    cache.on_change = controller.wake
    elector.on_change = controller.on_leadership
    usage = UsageCache()
    # `get -w` and `events -w` streams, fed by the cache (watchstream.py).
    watches = WatchHub(cache, store.keys, usage, store)
    follow_cache(cache, watches)
    server = rpc.make_server(max_workers=32,
                             interceptors=[Authorizer(POLICY)] if credentials else [])
    # NOT_SERVING until the cache is loaded; "mctl.leader" follows the election.
    serving = health.Health(server, (health.OVERALL, health.LEADER))
    on_leadership = elector.on_change

    def leadership_changed(leading: bool) -> None:
        serving.set(health.LEADER, leading)
        if on_leadership is not None:
            on_leadership(leading)
    elector.on_change = leadership_changed
    # Every scheduler serves reads from its cache and hands replica changes
    # to its controller, whether or not it leads.
    control_pb2_grpc.add_ControlPlaneServicer_to_server(
        ControlPlane(store, cache, controller, usage, controller.dial, events=events,
                     leadership=elector,
                     limits=validation.Limits(max_replicas=args.max_replicas,
                                              host_port_min=args.host_port_min),
                     max_cluster_replicas=args.max_cluster_replicas,
                     secret_box=secret_box, image_resolver=resolver, watches=watches), server)
    node_pb2_grpc.add_NodeServiceServicer_to_server(
        NodeService(NodeLeases(store, args.node_lease_ttl, live=cache.has_heartbeat,
                               count=cache.node_count,
                               max_heartbeats_per_second=args.max_heartbeats_per_second),
                    controller, usage, allocator, events=events,
                    service_cidr=str(controller.service_cidr or "")), server)
    try:
        port = rpc.bind(server, args.listen, credentials)
    except OSError as e:
        print(f"mctl-scheduler: {e}", file=sys.stderr)
        sys.exit(1)
    server.start()
    log.info("scheduler serving address=%s:%d etcd=%s (%s) prefix=%s tls=%s",
             rpc.host_of(args.listen), port, args.etcd,
             "mutual TLS" if etcd_tls else "plain text", args.prefix,
             f"verified as {pki.SCHEDULER_SERVER_NAME}" if credentials else "off")
    if credentials is None:
        log.warning("serving without TLS (--insecure): any peer may call any method")
    if args.metrics_listen:
        try:
            metrics_port = metrics.serve(args.metrics_listen, metrics.SCHEDULER)
        except OSError as e:
            print(f"mctl-scheduler: --metrics-listen {args.metrics_listen}: {e.strerror or e}",
                  file=sys.stderr)
            server.stop(grace=0)
            sys.exit(1)
        metrics.add_source(gauges.source(cache, lambda: elector.fence is not None))
        log.info("metrics serving address=%s:%d", rpc.host_of(args.metrics_listen),
                 metrics_port)
    web = None
    if args.web_listen:
        from .web.feed import Feed
        from .web.server import WebTLS, WebView
        web_tls = WebTLS(credentials.ca, args.tls_cert, args.tls_key) if credentials else None
        try:
            web = WebView(args.web_listen, Feed(cache, usage, identity,
                                                lambda: elector.fence is not None),
                          web_token, web_tls)
        except OSError as e:
            print(f"mctl-scheduler: --web-listen {args.web_listen}: {e.strerror or e}",
                  file=sys.stderr)
            server.stop(grace=0)
            sys.exit(1)
        web.start()
        log.info("web view serving address=%s:%d auth=%s", rpc.host_of(args.web_listen),
                 web.port, "+".join(
                     (["admin certificate"] if web_tls else []) + (["token"] if web_token else [])))
    controller.start()
    elector.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if wait_for_cache(cache, stop):
        serving.ready()
        sdnotify.notify("READY=1")
        log.info("scheduler ready: serving reads from its cache")
    watchdog = sdnotify.Watchdog()
    watchdog.start()
    stop.wait()
    log.info("scheduler stopping")
    sdnotify.notify("STOPPING=1")
    serving.shutdown()
    watchdog.close()
    metrics.close()
    if web is not None:
        web.close()
    elector.close()        # hands leadership over at once
    watches.close()        # ends the watch streams, whose clients resume elsewhere
    server.stop(grace=1)
    controller.close()
    events.close()
    cache.close()
    store.close()


if __name__ == "__main__":
    main()

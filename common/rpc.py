"""Every gRPC channel and server of mctl is made here.

One place decides transport options and mutual TLS, so that the CLI,
scheduler and agents cannot drift apart in how they connect. With a
TLSConfig, a server requires and verifies a client certificate from the
cluster CA, and a channel presents its own and verifies the server's by
*name* (`server_name`, e.g. "mctl-scheduler" or "node1.node.mctl"), not by
the address dialled, so the same certificates work on loopback, in network
namespaces and on VMs. Without one, both are plain text (explicitly asked for
with --insecure).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from concurrent import futures

import grpc

from .tls import TLSConfig

# Keepalives let a long `logs -f` stream notice a dead peer. The message
# size is raised from gRPC's 4 MiB and bounded the same on both sides, send
# and receive, so neither end can be made to buffer more: it covers a node's
# full desired set with thousands of replicas, and many times a page of a
# list (scheduler/paging.py keeps a page under 4 MiB, so lists never reach it).
MAX_MESSAGE_BYTES = 64 << 20
_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
]


def make_server(max_workers: int = 16,
                interceptors: Sequence[grpc.ServerInterceptor[object, object]] = ()) -> grpc.Server:
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        interceptors=list(interceptors),
        # Accept the keepalive pings our own channels send (every 20 s, even
        # idle): gRPC's default server answers pings more often than every
        # 5 minutes with GOAWAY "too_many_pings".
        options=_OPTIONS + [("grpc.so_reuseport", 0),
                            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000)],
    )


def bind(server: grpc.Server, address: str, tls: TLSConfig | None = None) -> int:
    """Binds `address` (host:port, port 0 for any free one); returns the port."""
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        credentials = grpc.ssl_server_credentials([(tls.key, tls.cert)],
                                                  root_certificates=tls.ca,
                                                  require_client_auth=True)
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return port


def make_channel(target: str, tls: TLSConfig | None = None,
                 server_name: str = "") -> grpc.Channel:
    """A channel to `target`; with `tls`, the server must prove it is `server_name`.

    `target` may list several addresses ("a:7070,b:7070", schedulers in HA):
    the channel uses the first that answers and moves on when it dies.
    """
    target = channel_target(target)
    if tls is None:
        return grpc.insecure_channel(target, options=_OPTIONS)
    if not server_name:
        raise ValueError("a TLS channel needs the server name to verify")
    credentials = grpc.ssl_channel_credentials(root_certificates=tls.ca, private_key=tls.key,
                                               certificate_chain=tls.cert)
    return grpc.secure_channel(target, credentials,
                               options=_OPTIONS + [("grpc.ssl_target_name_override", server_name)])


def channel_target(target: str) -> str:
    """gRPC's name for a list of addresses: "ipv4:a:1,b:2" (resolved here if names)."""
    addresses = [a.strip() for a in target.split(",") if a.strip()]
    if len(addresses) < 2:
        return target
    resolved = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        try:
            info = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except (OSError, ValueError):
            continue    # an unresolvable one is skipped, the others may answer
        family, *_, sockaddr = info[0]
        resolved.append((family, f"[{sockaddr[0]}]:{port}" if family == socket.AF_INET6
                         else f"{sockaddr[0]}:{port}"))
    if not resolved:
        return addresses[0]
    scheme = "ipv6" if all(f == socket.AF_INET6 for f, _ in resolved) else "ipv4"
    return f"{scheme}:" + ",".join(a for f, a in resolved
                                   if (f == socket.AF_INET6) == (scheme == "ipv6"))


def host_of(address: str) -> str:
    return address.rsplit(":", 1)[0]


def unavailable(error: grpc.RpcError) -> bool:
    """The peer could not be reached at all (as opposed to answering with an error)."""
    return isinstance(error, grpc.Call) and error.code() in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )

"""Every gRPC channel and server of mctl is made here.

One place decides transport options (and, later, mutual TLS), so that the
CLI, scheduler and agents cannot drift apart in how they connect.
"""

from __future__ import annotations

from concurrent import futures

import grpc

# Keepalives let a long `logs -f` stream notice a dead peer; message size
# covers a node's full desired set with thousands of replicas.
_OPTIONS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
]


def make_server(max_workers: int = 16) -> grpc.Server:
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        options=_OPTIONS + [("grpc.so_reuseport", 0)],
    )


def bind(server: grpc.Server, address: str) -> int:
    """Binds `address` (host:port, port 0 for any free one); returns the port."""
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return port


def make_channel(target: str) -> grpc.Channel:
    return grpc.insecure_channel(target, options=_OPTIONS)


def host_of(address: str) -> str:
    return address.rsplit(":", 1)[0]


def unavailable(error: grpc.RpcError) -> bool:
    """The peer could not be reached at all (as opposed to answering with an error)."""
    return isinstance(error, grpc.Call) and error.code() in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )

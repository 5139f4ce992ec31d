"""Why an mctl server answered with an error, beyond the status code.

Some codes cover different situations: UNAVAILABLE is both "nobody
answered at that address" (made by the client's own gRPC library) and "the
scheduler answered, but its etcd is away". Clients must never tell them
apart by reading the message, so a server that answers with such a status
names the reason in a trailing metadata entry, as Google APIs do with
`ErrorInfo.reason`:

    mctl-reason: StoreUnavailable

A client that finds a reason knows a server answered, and shows its message.
"""

from __future__ import annotations

import grpc

KEY = "mctl-reason"
# The scheduler is up, and etcd does not answer it.
STORE_UNAVAILABLE = "StoreUnavailable"
# The scheduler is up, and the node it relays a call to (logs, exec) is not.
NODE_UNAVAILABLE = "NodeUnavailable"
# A watch stream was cut off because its client read slower than changes came
# (scheduler/watchstream.py): watching again resumes it.
WATCH_FELL_BEHIND = "WatchFellBehind"


def attach(context: grpc.ServicerContext, reason: str) -> None:
    """Sends `reason` with the status the handler is about to return (or abort with)."""
    context.set_trailing_metadata(((KEY, reason),))


def of(error: grpc.RpcError) -> str:
    """The reason the server gave for `error`, or "" (also when no server answered)."""
    if not isinstance(error, grpc.Call):
        return ""
    for key, value in error.trailing_metadata() or ():
        if key == KEY:
            return value if isinstance(value, str) else value.decode(errors="replace")
    return ""

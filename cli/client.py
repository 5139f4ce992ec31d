"""The CLI's connection to the scheduler, its errors, and what a failed call means.

A failed call becomes one line chosen by its gRPC status code (`rpc_error`):
the server's own message where the request was at fault, a line about the
connection or the credentials where it never got that far.

In a module of its own so that every command module shares the same
CliError class, also when the CLI runs as `python -m mctl.cli.main` (then
main is `__main__`, and importing CliError from it would make a second class).

gRPC, the TLS helpers and the generated stubs are imported by the functions
that dial: `mctl --help`, `completion` and `config` never load them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from mctl.common import names

from . import config

if TYPE_CHECKING:
    import grpc
    from google.protobuf.message import Message

    from mctl.v1 import control_pb2_grpc

# The replies of the paged lists (WorkloadList, ReplicaList, NodeList, EventList).
Page = TypeVar("Page", bound="Message")
# A list that keeps handing out pages is a broken server, not a big cluster:
# 1,000 pages are at least a million objects.
MAX_PAGES = 1000


class CliError(Exception):
    """A failure to report in one line and exit 1.

    `transient`: the server was unreachable or slow, not wrong; a command
    polling for a state may try again.
    """

    exit_code = 1

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class UsageError(CliError):
    """A command line that says too little to act on: exit 2, as argparse does."""

    exit_code = 2


def check_name(what: str, value: str) -> None:
    """Refuses a name no object can have, before it is sent (and quoted back whole)."""
    if problem := names.validate_dns_label(value):
        raise UsageError(f"{what}: {problem}")


def one_line(text: str) -> str:
    """`text` with its lines joined: the CLI's errors are one line on stderr."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def stub(args: argparse.Namespace) -> control_pb2_grpc.ControlPlaneStub:
    from mctl.common import pki, rpc, tls
    from mctl.v1 import control_pb2_grpc

    args.server_address = config.server(args.server)
    try:
        credentials = config.credentials(args)
    except tls.TLSError as e:
        raise CliError(str(e)) from None
    args.tls_on = credentials is not None
    return control_pb2_grpc.ControlPlaneStub(
        rpc.make_channel(args.server_address, credentials, pki.SCHEDULER_SERVER_NAME))


def call(args: argparse.Namespace, fn: Callable[..., Any], request: Message,
         timeout: float = 15.0) -> Any:
    """`fn(request)`, with a failure turned into a CliError.

    The generated stubs are untyped, so the answer is Any: callers name its
    type (`resp: control_pb2.WorkloadList = call(...)`).
    """
    import grpc

    try:
        return fn(request, timeout=timeout)
    except grpc.RpcError as e:
        raise rpc_error(args, e) from None


def list_all(args: argparse.Namespace, fn: Callable[..., Page], request: Message,
             timeout: float = 15.0) -> Page:
    """Every page of a List* call, joined into one reply (the server pages: paging.py).

    Each page is one call with its own deadline, so a long list is not cut
    short by one deadline for all of it.
    """
    # The generated messages are untyped to mypy: their fields are reached through Any.
    page_request: Any = type(request)()
    page_request.CopyFrom(request)
    result: Any = None
    for _ in range(MAX_PAGES):
        page: Any = call(args, fn, page_request, timeout)
        token = page.next_page_token
        if result is None:
            result = page
        else:
            result.MergeFrom(page)      # repeated fields: appended, in order
        if not token:
            result.next_page_token = ""
            joined: Page = result
            return joined
        page_request.page_token = token
    raise CliError(f"the mctl server at {getattr(args, 'server_address', '?')} kept sending"
                   f" pages: more than {MAX_PAGES}")


# The server's message says it all: the caller's request was wrong, or does
# not fit the cluster's state now. (Status code names: gRPC is imported late.)
_SERVER_SAYS = frozenset({
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "RESOURCE_EXHAUSTED",
})


def rpc_error(args: argparse.Namespace, e: grpc.RpcError) -> CliError:
    """The one line that tells the user what a failed call means, by its status code.

    Never by searching the server's message: where one code covers two
    situations, the server names the reason in the status (common/reasons.py).
    """
    import grpc

    from mctl.common import reasons, tls

    server = getattr(args, "server_address", "") or "?"
    if not isinstance(e, grpc.Call):
        return CliError(one_line(str(e)) or f"the call to the mctl server at {server} failed")
    code, details = e.code(), one_line(e.details() or "")
    if code == grpc.StatusCode.UNAVAILABLE:
        if reasons.of(e):
            # The server answered: something behind it (its store, a node) did not.
            return CliError(details or f"the mctl server at {server} is unavailable")
        # Nobody answered: gRPC's own words say why, a TLS handshake among them.
        tls_problem = tls.explain_failure(details, getattr(args, "tls_on", True))
        if tls_problem:
            return CliError(f"TLS handshake with {server} failed: {tls_problem}")
        return CliError(f"cannot reach the mctl server at {server}", transient=True)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return CliError(f"the mctl server at {server} did not answer in time", transient=True)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return CliError(f"the mctl server at {server} did not accept this client's credentials"
                        + (f": {details}" if details else ""))
    if code == grpc.StatusCode.PERMISSION_DENIED:
        # The server's message names the caller and what it may not do.
        return CliError(details or f"permission denied by the mctl server at {server}: check"
                                   " which certificate this client uses (--tls-cert)")
    if code.name in _SERVER_SAYS:
        return CliError(details or code.name.lower().replace("_", " "))
    if code == grpc.StatusCode.CANCELLED:
        return CliError("the call was cancelled")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return CliError(f"the mctl server at {server} does not offer this call"
                        " (is it an older version than this mctl?)")
    # INTERNAL, UNKNOWN, DATA_LOSS: the server broke, not the request.
    return CliError(f"the mctl server at {server} failed: {details or code.name.lower()}")

"""The CLI's connection to the scheduler, and its one kind of error.

In a module of its own so that every command module shares the same
CliError class, also when the CLI runs as `python -m mctl.cli.main` (then
main is `__main__`, and importing CliError from it would make a second class).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import grpc

from mctl.common import pki, rpc, tls
from mctl.v1 import control_pb2_grpc

from . import config


class CliError(Exception):
    """A failure to report in one line and exit 1."""


def stub(args: argparse.Namespace) -> control_pb2_grpc.ControlPlaneStub:
    args.server_address = config.server(args.server)
    try:
        credentials = config.credentials(args)
    except tls.TLSError as e:
        raise CliError(str(e)) from None
    args.tls_on = credentials is not None
    return control_pb2_grpc.ControlPlaneStub(
        rpc.make_channel(args.server_address, credentials, pki.SCHEDULER_SERVER_NAME))


def call(args: argparse.Namespace, fn: Callable[..., object], request: object,
         timeout: float = 15.0) -> object:
    try:
        return fn(request, timeout=timeout)
    except grpc.RpcError as e:
        raise rpc_error(args, e) from None


def rpc_error(args: argparse.Namespace, e: grpc.RpcError) -> CliError:
    if isinstance(e, grpc.Call):
        tls_problem = tls.explain_failure(e.details() or "", getattr(args, "tls_on", True))
        if e.code() == grpc.StatusCode.UNAVAILABLE and tls_problem:
            return CliError(f"TLS handshake with {args.server_address} failed: {tls_problem}")
        if e.code() == grpc.StatusCode.UNAVAILABLE and "store" not in (e.details() or ""):
            return CliError(f"cannot reach the mctl server at {args.server_address}")
        if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return CliError(f"the mctl server at {args.server_address} did not answer in time")
        return CliError(e.details() or e.code().name.lower())
    return CliError(str(e))

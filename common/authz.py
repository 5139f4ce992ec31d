"""Who may call what: a gRPC server interceptor that checks the caller's certificate.

Mutual TLS proves that a caller holds a certificate from the cluster CA; this
decides what that certificate's role may do (see pki.py for how a role is
written into the subject). A server lists, per service, the roles allowed to
call it and, for services whose callers speak for themselves (a node
reporting its own status), how to read the name the request speaks for: it
must be the certificate's CN, so node1 cannot heartbeat for node2. A service
without a rule is refused: adding a service means deciding who may call it.

Refusals are PERMISSION_DENIED with a message naming the caller, the method
and who would have been allowed.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias, cast

import grpc

from . import pki

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rule:
    roles: frozenset[str]
    # Reads the name a request speaks for; None when any holder of a role may
    # act for anyone (an admin, the scheduler).
    speaks_for: Callable[[object], str] | None = None


Policy = dict[str, Rule]   # full service name ("mctl.v1.Agent") -> rule
# Requests and responses are whatever messages the guarded service takes.
Handler: TypeAlias = "grpc.RpcMethodHandler[object, object]"
# grpc-stubs makes ServerInterceptor generic; grpc's class cannot be
# subscripted at run time (mypy's docs, "classes that are generic in stubs").
if TYPE_CHECKING:
    _ServerInterceptor = grpc.ServerInterceptor[object, object]
else:
    _ServerInterceptor = grpc.ServerInterceptor


@functools.lru_cache(maxsize=512)
def _identity_of_pem(pem: bytes) -> pki.Identity | None:
    # Read without `cryptography` (pki.identity_of_pem): gRPC's TLS has
    # verified the certificate, only its subject is needed here.
    return pki.identity_of_pem(pem)


def peer_identity(context: grpc.ServicerContext) -> pki.Identity | None:
    """The role and name of the caller's verified certificate; None without one."""
    # grpc-stubs types each property as bytes; gRPC gives a list of values
    # per property (its docs: "an iterable of bytes for each auth property").
    properties = cast(Mapping[str, Sequence[bytes]], context.auth_context())
    pems = properties.get("x509_pem_cert") or []
    return _identity_of_pem(pems[0]) if pems else None


def refusal(rule: Rule | None, service: str, method: str, who: pki.Identity | None,
            request: object | None) -> str | None:
    """Why `who` may not call `method` with `request`, or None if it may."""
    if rule is None:
        return f"no caller may call {method}: {service} has no authorization rule"
    if who is None:
        return f"{method} needs a certificate with an mctl role; the caller's has none"
    if who.role not in rule.roles:
        allowed = " or ".join(sorted(rule.roles))
        return f"{who} may not call {method} (only role {allowed} may)"
    if rule.speaks_for is not None:
        if request is None:
            return f"{method} streams its requests, so whom it speaks for cannot be checked"
        claimed = rule.speaks_for(request)
        if claimed != who.name:
            return f"{who} may not call {method} for {claimed or 'an unnamed node'}"
    return None


class Authorizer(_ServerInterceptor):
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._guarded: dict[str, Handler] = {}

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = continuation(details)
        if handler is None:
            return None
        guarded = self._guarded.get(details.method)
        if guarded is None:
            service = details.method.lstrip("/").partition("/")[0]
            guarded = _guard(handler, details.method, service, self.policy.get(service))
            self._guarded[details.method] = guarded
        return guarded


def _guard(handler: Handler, method: str, service: str, rule: Rule | None) -> Handler:
    def check(request: object | None, context: grpc.ServicerContext) -> None:
        who = peer_identity(context)
        problem = refusal(rule, service, method, who, request)
        if problem is not None:
            log.warning("refused peer=%s: %s", context.peer(), problem)
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"permission denied: {problem}")

    # A handler carries exactly one behaviour, the one of its streaming kind.
    ser, de = handler.response_serializer, handler.request_deserializer
    if (inner_uu := handler.unary_unary) is not None:
        def unary_unary(request: object, context: grpc.ServicerContext) -> object:
            check(request, context)
            return inner_uu(request, context)
        return grpc.unary_unary_rpc_method_handler(unary_unary, de, ser)
    if (inner_us := handler.unary_stream) is not None:
        def unary_stream(request: object, context: grpc.ServicerContext) -> Iterator[object]:
            check(request, context)
            yield from inner_us(request, context)
        return grpc.unary_stream_rpc_method_handler(unary_stream, de, ser)
    # Streamed requests: the role is checked before the first message is read
    # (a rule with speaks_for refuses them: there is no single request to read).
    if (inner_ss := handler.stream_stream) is not None:
        def stream_stream(requests: Iterator[object],
                          context: grpc.ServicerContext) -> Iterator[object]:
            check(None, context)
            yield from inner_ss(requests, context)
        return grpc.stream_stream_rpc_method_handler(stream_stream, de, ser)
    if (inner_su := handler.stream_unary) is not None:
        def stream_unary(requests: Iterator[object], context: grpc.ServicerContext) -> object:
            check(None, context)
            return inner_su(requests, context)
        return grpc.stream_unary_rpc_method_handler(stream_unary, de, ser)
    raise ValueError(f"{method}: the handler has no behaviour")

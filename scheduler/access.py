"""Who may call the scheduler: admins the control plane, each agent its own node's API.

The node API is only for agents, and each agent only for its own node: the
name a request speaks for must be the CN of the caller's certificate, so a
compromised node cannot heartbeat for, register over, or report the
replicas of another. The scheduler itself needs no control-plane access.
"""

from __future__ import annotations

from mctl.common import health
from mctl.common.authz import Policy, Rule
from mctl.v1 import control_pb2, node_pb2


def node_named_by(request: object) -> str:
    """The node a NodeService request speaks for."""
    if isinstance(request, node_pb2.RegisterRequest):
        return request.node.name
    if isinstance(request, node_pb2.HeartbeatRequest | node_pb2.StatusReport):
        return request.node
    # A method added to NodeService later is refused until it is listed here.
    return ""


POLICY: Policy = {
    control_pb2.DESCRIPTOR.services_by_name["ControlPlane"].full_name:
        Rule(roles=frozenset({"admin"})),
    node_pb2.DESCRIPTOR.services_by_name["NodeService"].full_name:
        Rule(roles=frozenset({"agent"}), speaks_for=node_named_by),
    health.SERVICE_NAME: health.RULE,
}

"""Who may call an agent: the scheduler and admins, nobody else.

The agent API starts and stops containers and reads their logs (and will
exec into them), so another node's agent certificate is refused too: a
compromised node must not reach into its neighbours.
"""

from __future__ import annotations

from mctl.common import health
from mctl.common.authz import Policy, Rule
from mctl.v1 import agent_pb2

POLICY: Policy = {
    agent_pb2.DESCRIPTOR.services_by_name["Agent"].full_name:
        Rule(roles=frozenset({"scheduler", "admin"})),
    health.SERVICE_NAME: health.RULE,
}

"""Which replicas of a service are its endpoints, and which of those take traffic.

One rule for the scheduler (which sends every node the endpoints it
balances over, scheduler/services.py) and for the CLI (`describe workload`
lists them), so that what a user reads is what the nodes do:

- an endpoint is a replica that is Running, has an address, and is not
  being deleted: it has a DNS name (`<replica>.<workload>...`), whether or
  not it takes traffic;
- it is ready (in the rotation of the virtual IP) when its agent reports
  it ready, which means its `readiness` check passes; a replica whose spec
  has no readiness check is ready whenever it is Running. The replica's own
  spec decides, not the workload's: during a rolling update the old
  replicas keep the check they were started with.

The second half of the last rule is also what an agent that predates
readiness reports (`ready` false, no check to run): such a node's replicas
still take traffic.
"""

from __future__ import annotations

from mctl.v1 import types_pb2


def is_endpoint(r: types_pb2.Replica) -> bool:
    return (r.status.phase == types_pb2.REPLICA_PHASE_RUNNING and bool(r.status.ip)
            and not r.metadata.deletion_requested)


def is_ready(r: types_pb2.Replica) -> bool:
    """Whether the endpoint `r` takes traffic (False for a replica that is no endpoint)."""
    return is_endpoint(r) and (r.status.ready or not r.spec.HasField("readiness"))

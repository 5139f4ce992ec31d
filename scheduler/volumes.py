"""Named volumes: a directory kept on one node, found again by name.

A workload's `volumes: [{name: data, volume: api-data}]` names a volume of
its namespace. The data lives on a node's disk (the agent makes it there,
V2's side), so the scheduler keeps, per name, a `VolumeRecord` in etcd
(`volumes/<namespace>/<name>`):

- made by the controller's first pass that sees a workload use the name,
  without a node;
- bound to a node when the first replica that uses it is placed
  (placement.py's `place_batch`, committed with that replica's record);
- from then on, every replica that mounts it is placed on that node only,
  or stays Pending with that node's reason (`volume api-data is on node2:
  insufficient memory`). Two workloads naming one volume therefore always
  share its node: the conflict "one volume, two nodes" cannot arise;
- kept when its workloads are deleted (the data is the point), removed
  only by `mctl delete volume NAME`, which is refused while a workload
  uses it;
- marked `lost` when its node's record is gone for good (the node was
  removed from the cluster): its users stay Pending saying so, and it is
  never made again, empty, somewhere else. A node that is only NotReady,
  even past the grace period that moves other replicas, still holds the
  data: the users wait for it, as Kubernetes' local persistent volumes do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mctl.common.validation import references
from mctl.v1 import types_pb2

from .keys import KeyCodec
from .store import Snapshot, Write

Key = tuple[str, str]


@dataclass
class VolumePlan:
    # Every record as this pass will leave it (copies where changed).
    records: dict[Key, types_pb2.VolumeRecord] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)      # what was marked lost, for the log


def used_by(replica: types_pb2.Replica) -> list[str]:
    """The named volumes a replica mounts, in spec order."""
    return [v.volume for v in replica.spec.volumes if v.WhichOneof("source") == "volume"]


def plan_records(snap: Snapshot) -> VolumePlan:
    plan = VolumePlan(records=dict(snap.volumes))
    for (ns, _), w in sorted(snap.workloads.items()):
        if w.metadata.deletion_requested:
            continue
        for name in sorted(references(w.spec)[2]):
            if (ns, name) not in plan.records:
                record = types_pb2.VolumeRecord()
                record.metadata.namespace = ns
                record.metadata.name = name
                plan.records[(ns, name)] = record
    for key, record in sorted(plan.records.items()):
        if record.node and not record.lost and record.node not in snap.nodes:
            marked = types_pb2.VolumeRecord()
            marked.CopyFrom(record)
            marked.lost = True
            plan.records[key] = marked
            plan.lost.append(f"volume={key[0]}/{key[1]} lost with node={record.node}")
    return plan


def record_writes(snap: Snapshot, records: dict[Key, types_pb2.VolumeRecord],
                  keys: KeyCodec) -> list[Write]:
    """Compare-and-swap writes of the records that differ from the snapshot's."""
    writes = []
    for key, record in sorted(records.items()):
        if snap.volumes.get(key) == record:
            continue
        store_key = keys.volume(*key)
        writes.append(Write(store_key, record.SerializeToString(),
                            snap.mod_revisions.get(store_key, 0)))
    return writes


def with_users(snap: Snapshot, record: types_pb2.VolumeRecord,
               used_bytes: int = 0) -> types_pb2.VolumeRecord:
    """The record as `get volumes` shows it: with its users (workloads naming it)."""
    out = types_pb2.VolumeRecord()
    out.CopyFrom(record)
    ns, name = record.metadata.namespace, record.metadata.name
    out.users[:] = sorted(w.metadata.name for (wns, _), w in snap.workloads.items()
                          if wns == ns and name in references(w.spec)[2])
    if used_bytes:
        out.used_bytes = used_bytes
    return out

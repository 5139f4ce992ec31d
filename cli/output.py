"""How the CLI shows objects: tables that fit 80 columns, or JSON/YAML.

Tables follow kubectl's habits: upper-case headers, columns separated by
three spaces, ages as `5s`, `3m`, `2h`, `4d`, and `<none>` for empty cells.
Each kind's table is made as (headers, rows) first, so that `get` can add a
LABELS column (--show-labels) to any of them.

YAML and the spec converters are imported when a document is printed: a
table is what most calls print, and the CLI's start time is paid per call.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from mctl.common.phases import phase_name, reason_name
from mctl.common.quantity import format_bytes_short, format_cpu
from mctl.v1 import control_pb2, types_pb2

from .tables import table

if TYPE_CHECKING:
    from google.protobuf.message import Message

Listing = (control_pb2.WorkloadList | control_pb2.ReplicaList | control_pb2.NodeList
           | control_pb2.ConfigList | control_pb2.SecretList | control_pb2.VolumeList)
Rows = tuple[list[str], list[list[str]]]

_UNSET_OR_PENDING = (types_pb2.REPLICA_PHASE_UNSPECIFIED, types_pb2.REPLICA_PHASE_PENDING)


def age(unix_ms: int, now_ms: int | None = None) -> str:
    if not unix_ms:
        return "<unknown>"
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    s = max(0, (now_ms - unix_ms) // 1000)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size * 2 or (unit == "m" and s >= 60):
            return f"{s // size}{unit}"
    return f"{s}s"


def cores(value: float) -> str:
    return format_cpu(int(round(value * 1000))) if value else "0"


def workloads(resp: control_pb2.WorkloadList, wide: bool, all_ns: bool) -> str:
    return table(*workload_rows(resp, wide, all_ns))


def workload_rows(resp: control_pb2.WorkloadList, wide: bool, all_ns: bool) -> Rows:
    headers = (["NAMESPACE"] if all_ns else []) + ["NAME", "READY", "UP-TO-DATE", "AGE"]
    if wide:
        headers += ["VIP", "IMAGE", "CPU", "MEMORY"]
    rows = []
    for w, s in zip(resp.items, resp.summaries, strict=True):
        row = ([w.metadata.namespace] if all_ns else []) + [
            w.metadata.name + (" (deleting)" if w.metadata.deletion_requested else ""),
            f"{s.running}/{s.desired}", str(s.up_to_date), age(w.metadata.created_unix_ms)]
        if wide:
            # A workload with ports gets its virtual IP within a pass of the
            # scheduler; one without has none.
            vip = w.status.virtual_ip or ("<pending>" if w.spec.ports else "<none>")
            row += [vip, w.spec.image, format_cpu(w.spec.resources.cpu_millis),
                    format_bytes_short(w.spec.resources.memory_bytes)]
        rows.append(row)
    return headers, rows


def replica_status(r: types_pb2.Replica) -> str:
    """The STATUS column: `Running`, `Failed:OOMKilled`, or a Pending one's reason alone."""
    phase = phase_name(r.status.phase)
    if r.status.reason not in (types_pb2.REPLICA_REASON_UNSPECIFIED,
                               types_pb2.REPLICA_REASON_COMPLETED):
        reason = reason_name(r.status.reason)
        return reason if r.status.phase in _UNSET_OR_PENDING else f"{phase}:{reason}"
    return phase


def replicas(resp: control_pb2.ReplicaList, wide: bool, all_ns: bool) -> str:
    return table(*replica_rows(resp, wide, all_ns))


def replica_rows(resp: control_pb2.ReplicaList, wide: bool, all_ns: bool) -> Rows:
    headers = (["NAMESPACE"] if all_ns else []) + [
        "NAME", "NODE", "STATUS", "RESTARTS", "AGE", "CPU", "MEMORY"]
    if wide:
        headers += ["IP", "MESSAGE"]
    rows = []
    for r, u in zip(resp.items, resp.usage, strict=True):
        running = r.status.phase == types_pb2.REPLICA_PHASE_RUNNING
        row = ([r.metadata.namespace] if all_ns else []) + [
            r.metadata.name, r.node or "<none>", replica_status(r), str(r.status.restarts),
            age(r.metadata.created_unix_ms),
            cores(u.cpu_cores) if running else "-",
            format_bytes_short(u.memory_bytes) if running and u.memory_bytes else "-"]
        if wide:
            row += [r.status.ip or "<none>", r.status.message or ""]
        rows.append(row)
    return headers, rows


def nodes(resp: control_pb2.NodeList, wide: bool) -> str:
    return table(*node_rows(resp, wide))


def node_rows(resp: control_pb2.NodeList, wide: bool) -> Rows:
    headers = ["NAME", "STATUS", "REPLICAS", "CPU(REQ/CAP)", "MEMORY(REQ/CAP)", "AGE"]
    if wide:
        headers += ["ADDRESS", "LABELS"]
    rows = []
    for n, alloc, count in zip(resp.items, resp.allocated, resp.replicas, strict=True):
        status = "Ready" if n.ready else "NotReady"
        if n.cordoned:
            status += ",SchedulingDisabled"
        row = [n.name, status, str(count),
               f"{format_cpu(alloc.cpu_millis)}/{format_cpu(n.capacity.cpu_millis)}",
               f"{format_bytes_short(alloc.memory_bytes)}/"
               f"{format_bytes_short(n.capacity.memory_bytes)}",
               age(n.registered_unix_ms)]
        if wide:
            row += [n.address, ",".join(f"{k}={v}" for k, v in sorted(n.labels.items()))
                    or "<none>"]
        rows.append(row)
    return headers, rows


def configs(resp: control_pb2.ConfigList, all_ns: bool) -> str:
    return table(*config_rows(resp, all_ns))


def config_rows(resp: control_pb2.ConfigList, all_ns: bool) -> Rows:
    headers = (["NAMESPACE"] if all_ns else []) + ["NAME", "KEYS", "SIZE", "AGE"]
    rows = [([c.metadata.namespace] if all_ns else []) + [
        c.metadata.name, ",".join(sorted(c.data)) or "<none>",
        format_bytes_short(sum(len(v.encode()) for v in c.data.values())),
        age(c.metadata.created_unix_ms)] for c in resp.items]
    return headers, rows


def secrets(resp: control_pb2.SecretList, all_ns: bool) -> str:
    return table(*secret_rows(resp, all_ns))


def secret_rows(resp: control_pb2.SecretList, all_ns: bool) -> Rows:
    """Names and keys: the scheduler never sends a value, and there is none to show."""
    headers = (["NAMESPACE"] if all_ns else []) + ["NAME", "KEYS", "AGE"]
    rows = [([x.metadata.namespace] if all_ns else []) + [
        x.metadata.name, ",".join(x.keys) or "<none>", age(x.metadata.created_unix_ms)]
        for x in resp.items]
    return headers, rows


def volumes(resp: control_pb2.VolumeList, all_ns: bool) -> str:
    return table(*volume_rows(resp, all_ns))


def volume_rows(resp: control_pb2.VolumeList, all_ns: bool) -> Rows:
    headers = (["NAMESPACE"] if all_ns else []) + ["NAME", "NODE", "USED", "USERS"]
    rows = [([v.metadata.namespace] if all_ns else []) + [
        v.metadata.name, (v.node or "<none>") + (" (lost)" if v.lost else ""),
        format_bytes_short(v.used_bytes), ",".join(v.users) or "<none>"] for v in resp.items]
    return headers, rows


def rows(resp: Listing, wide: bool, all_ns: bool) -> Rows:
    """The table of any listed kind, as headers and rows."""
    if isinstance(resp, control_pb2.WorkloadList):
        return workload_rows(resp, wide, all_ns)
    if isinstance(resp, control_pb2.ReplicaList):
        return replica_rows(resp, wide, all_ns)
    if isinstance(resp, control_pb2.ConfigList):
        return config_rows(resp, all_ns)
    if isinstance(resp, control_pb2.SecretList):
        return secret_rows(resp, all_ns)
    if isinstance(resp, control_pb2.VolumeList):
        return volume_rows(resp, all_ns)
    return node_rows(resp, wide)


def labels(resp: Listing) -> list[str]:
    """Each item's labels as `k=v,...` (kubectl's LABELS column), in item order."""
    out = []
    for item in resp.items:
        found = item.labels if isinstance(item, types_pb2.Node) else item.metadata.labels
        out.append(",".join(f"{k}={v}" for k, v in sorted(found.items())) or "<none>")
    return out


def reorder(resp: Listing, order: list[int]) -> None:
    """Puts `resp`'s items in `order`, with every list that runs alongside them.

    The summaries, usage and counts of a list are "same order as items"
    (control.proto): each repeated field as long as the items is reordered.
    """
    count = len(resp.items)
    for field, value in resp.ListFields():
        if field.is_repeated and len(value) == count:
            if field.type == field.TYPE_MESSAGE:
                copies = [type(value[i])() for i in order]
                for copy, i in zip(copies, order, strict=True):
                    copy.CopyFrom(value[i])
                del value[:]
                value.extend(copies)
            else:
                values = [value[i] for i in order]
                del value[:]
                value.extend(values)


def _message_dict(message: Message) -> dict[str, Any]:
    from google.protobuf import json_format
    return json_format.MessageToDict(message, preserving_proto_field_name=False)


def replica_dict(r: types_pb2.Replica) -> dict[str, Any]:
    """A replica for `-o json|yaml`, its phase and reason spelled as users read them.

    MessageToDict would write enum names (REPLICA_PHASE_RUNNING) and put the
    two fields last (it follows field numbers); scripts read `"phase":
    "Running"` first in the status, as before the enums. Unset ones stay out.
    """
    doc = _message_dict(r)
    status = doc.get("status")
    if isinstance(status, dict):
        named = {"phase": phase_name(r.status.phase), "reason": reason_name(r.status.reason)}
        doc["status"] = ({k: v for k, v in named.items() if k in status}
                         | {k: v for k, v in status.items() if k not in named})
    return doc


def documents(resp: Listing, fmt: str) -> str:
    """The listed objects as `{"items": [...]}` in JSON or YAML; workloads in SPEC.md's terms."""
    doc: object = {"items": item_dicts(resp)}
    if fmt == "json":
        return json.dumps(doc, indent=2, sort_keys=False)
    import yaml
    return yaml.safe_dump(doc, sort_keys=False).rstrip()


def item_dicts(resp: Listing) -> list[dict[str, Any]]:
    """Each listed object as `-o json` shows it (what JSONPaths select from)."""
    from mctl.common.spec import config_to_dict, secret_summary_to_dict, workload_to_dict

    docs: list[dict[str, Any]]
    if isinstance(resp, control_pb2.WorkloadList):
        docs = [workload_to_dict(w) for w in resp.items]
    elif isinstance(resp, control_pb2.ReplicaList):
        docs = [replica_dict(r) for r in resp.items]
    elif isinstance(resp, control_pb2.ConfigList):
        docs = [config_to_dict(c) for c in resp.items]
    elif isinstance(resp, control_pb2.SecretList):
        docs = [secret_summary_to_dict(x.metadata, x.keys) for x in resp.items]
    else:
        docs = [_message_dict(item) for item in resp.items]
    return docs

"""`mctl describe workload|replica|node NAME` and `mctl top replicas|nodes`.

describe shows one object in detail, what runs on or for it, and its recent
events (oldest first, as kubectl does); top shows the latest usage samples
that the agents reported, which the scheduler holds in memory only.
"""

from __future__ import annotations

import argparse
import time

from mctl.common.endpoints import is_endpoint, is_ready
from mctl.common.names import quote
from mctl.common.quantity import format_bytes_short, format_cpu
from mctl.v1 import control_pb2, types_pb2

from . import output

MAX_ENDPOINTS_SHOWN = 8

KINDS = {"workload": "Workload", "workloads": "Workload", "wl": "Workload",
         "replica": "Replica", "replicas": "Replica", "rep": "Replica",
         "node": "Node", "nodes": "Node", "no": "Node"}



def image_line(spec: types_pb2.WorkloadSpec) -> str:
    """The image as written, and the digest its tag was pinned to on apply (if any)."""
    notes = []
    if spec.image_digest and "@" not in spec.image:
        notes.append(f"pinned to {spec.image_digest}")
    if spec.image_pull_policy:
        notes.append(f"imagePullPolicy {spec.image_pull_policy}")
    return f"{spec.image} ({', '.join(notes)})" if notes else spec.image

def pull_line(p: types_pb2.ImagePullProgress) -> str:
    """`pulling 12.3Mi of 30.1Mi, 4s` / `pulled 30.1Mi in 5.2s`, as the agent last reported."""
    seconds = p.elapsed_ms / 1000
    if p.done:
        return f"pulled {format_bytes_short(p.bytes)} in {seconds:.1f}s"
    total = f" of {format_bytes_short(p.total_bytes)}" if p.total_bytes else ""
    return f"pulling {format_bytes_short(p.bytes)}{total}, {seconds:.0f}s"


def when(unix_ms: int) -> str:
    if not unix_ms:
        return "<none>"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix_ms / 1000))
    return f"{stamp} ({output.age(unix_ms)} ago)"


def fields(pairs: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in pairs) + 2
    return "\n".join(f"{k + ':':<{width}}{v}" for k, v in pairs)


def resources(r: types_pb2.Resources, no_pids: str = "unlimited") -> str:
    return (f"cpu {format_cpu(r.cpu_millis)}, memory {format_bytes_short(r.memory_bytes)}, "
            f"pids {r.pids or no_pids}")


def indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def events_section(events: control_pb2.EventList) -> str:
    if not events.items:
        return "Events:  <none>"
    rows = [[output.age(e.unix_ms), e.type, e.reason, e.message] for e in events.items]
    return "Events:\n" + indent(output.table(["AGE", "TYPE", "REASON", "MESSAGE"], rows))


def replicas_section(reps: control_pb2.ReplicaList, all_ns: bool) -> str:
    if not reps.items:
        return "Replicas:  <none>"
    return "Replicas:\n" + indent(output.replicas(reps, wide=False, all_ns=all_ns))


def endpoints(reps: control_pb2.ReplicaList) -> str:
    """The service's endpoints as the nodes balance them (common/endpoints.py)."""
    shown = []
    for r in sorted(reps.items, key=lambda r: r.metadata.name):
        if not is_endpoint(r):
            continue
        # The list marks a replica whose node stopped heartbeating; the
        # scheduler takes it out of the rotation.
        ready = is_ready(r) and r.status.reason != types_pb2.REPLICA_REASON_NODE_NOT_READY
        shown.append(f"{r.status.ip} ({r.metadata.name}, {'ready' if ready else 'not ready'})")
    if len(shown) > MAX_ENDPOINTS_SHOWN:
        # One line stays readable; `get replicas -o wide` lists them all.
        more = len(shown) - MAX_ENDPOINTS_SHOWN
        shown = shown[:MAX_ENDPOINTS_SHOWN] + [f"and {more} more"]
    return ", ".join(shown) or "<none>"


def volumes_line(spec: types_pb2.WorkloadSpec) -> str:
    """Each volume as `name (source) at /path`, e.g. `data (volume api-data) at /data`."""
    mounts: dict[str, list[str]] = {}
    for m in spec.volume_mounts:
        mounts.setdefault(m.name, []).append(m.mount_path + (" ro" if m.read_only else ""))
    parts = []
    for v in spec.volumes:
        source = v.WhichOneof("source")
        what = {"empty_dir": "emptyDir" + (f" {v.empty_dir.medium}" if v.empty_dir.medium
                                           else ""),
                "host_path": f"hostPath {v.host_path.path}"}.get(
            source or "", f"{source} {getattr(v, source or 'name')}")
        parts.append(f"{v.name} ({what}) at {', '.join(mounts.get(v.name, [])) or '<none>'}")
    return "; ".join(parts)


def describe_workload(w: types_pb2.Workload, summary: control_pb2.WorkloadSummary,
                      reps: control_pb2.ReplicaList) -> str:
    spec = w.spec
    ports = ", ".join((f"{p.name} " if p.name else "") + f"{p.container_port}/"
                      f"{p.protocol or 'TCP'}"
                      + (f" -> host {p.host_port}" if p.host_port else "")
                      for p in spec.ports)
    pairs = [
        ("Name", w.metadata.name + (" (deleting)" if w.metadata.deletion_requested else "")),
        ("Namespace", w.metadata.namespace),
        ("Labels", ",".join(f"{k}={v}" for k, v in sorted(w.metadata.labels.items()))
         or "<none>"),
        ("Created", when(w.metadata.created_unix_ms)),
        ("Generation", str(w.metadata.generation)),
        ("Replicas", f"{summary.desired} desired, {summary.running} running, "
                     f"{summary.up_to_date} up-to-date"),
        ("Image", image_line(spec)),
        ("Command", " ".join([*spec.command, *spec.args]) or "<image default>"),
        ("Resources", resources(spec.resources) + " per replica"),
        ("Ports", ports or "<none>"),
    ]
    if spec.ports:
        pairs += [("Virtual IP", w.status.virtual_ip or "<pending>"),
                  ("Endpoints", endpoints(reps))]
    if spec.HasField("readiness"):
        check = spec.readiness
        probe = (f"exec {' '.join(check.exec)}" if check.exec else f"tcp port {check.tcp_port}")
        pairs.append(("Readiness", f"{probe} every {check.period_seconds}s, not ready after "
                                   f"{check.failure_threshold} failures"))
    if spec.volumes:
        pairs.append(("Volumes", volumes_line(spec)))
    sources = []
    for var in spec.env:
        if var.HasField("value_from"):
            ref = var.value_from
            origin = f"config {ref.config}" if ref.config else f"secret {ref.secret}"
            sources.append(f"{var.name} from {origin} key {ref.key}")
    if sources:
        # Names and keys only: the values are the scheduler's and the node's.
        pairs.append(("Env from", ", ".join(sources)))
    pairs += [
        ("Restart policy", spec.restart_policy or "Always"),
        ("Update", f"maxSurge {spec.update.max_surge}, "
                   f"maxUnavailable {spec.update.max_unavailable}"),
        ("Node selector", ",".join(f"{k}={v}" for k, v in sorted(spec.node_selector.items()))
         or "<none>"),
    ]
    return fields(pairs) + "\n" + replicas_section(reps, all_ns=False)


def describe_replica(r: types_pb2.Replica, usage: types_pb2.Usage) -> str:
    st = r.status
    pairs = [
        ("Name", r.metadata.name),
        ("Namespace", r.metadata.namespace),
        ("Workload", r.workload),
        ("Node", r.node or "<none>"),
        ("Status", output.replica_status(r)),
    ]
    if st.message:
        pairs.append(("Message", st.message))
    pairs += [
        ("IP", st.ip or "<none>"),
        ("Restarts", str(st.restarts) + (f" (last exit: {st.last_exit})"
                                          if st.last_exit else "")),
        ("Created", when(r.metadata.created_unix_ms)),
        ("Started", when(st.started_unix_ms)),
    ]
    if st.finished_unix_ms:
        pairs += [("Finished", when(st.finished_unix_ms)), ("Exit code", str(st.exit_code))]
    pairs.append(("Image", image_line(r.spec)))
    if st.HasField("image_pull"):
        pairs.append(("Image pull", pull_line(st.image_pull)))
    pairs += [
        ("Command", " ".join([*r.spec.command, *r.spec.args]) or "<image default>"),
        ("Limits", resources(r.spec.resources)),
        ("Spec hash", r.spec_hash),
        ("UID", r.metadata.uid),
    ]
    if st.phase == types_pb2.REPLICA_PHASE_RUNNING:
        pairs.append(("Usage", f"cpu {output.cores(usage.cpu_cores)}, memory "
                               f"{format_bytes_short(usage.memory_bytes)}, pids {usage.pids}"))
    return fields(pairs)


def describe_node(n: types_pb2.Node, allocated: types_pb2.Resources, usage: types_pb2.Usage,
                  reps: control_pb2.ReplicaList) -> str:
    status = "Ready" if n.ready else "NotReady"
    if not n.ready and n.not_ready_since_unix_ms:
        status += f" since {when(n.not_ready_since_unix_ms)}"
    pairs = [
        ("Name", n.name),
        ("Address", n.address),
        ("Status", status),
        ("Schedulable", "no (cordoned)" if n.cordoned else "yes"),
        ("Labels", ",".join(f"{k}={v}" for k, v in sorted(n.labels.items())) or "<none>"),
        ("Registered", when(n.registered_unix_ms)),
        ("Runtime", f"{n.runtime or 'native'}, cgroup {n.cgroup_mode or '?'}"),
        ("Capacity", resources(n.capacity)),
        ("Requested", resources(allocated, no_pids="0")),
        ("Usage", f"cpu {output.cores(usage.cpu_cores)}, memory "
                  f"{format_bytes_short(usage.memory_bytes)}, pids {usage.pids}"),
    ]
    return fields(pairs) + "\n" + replicas_section(reps, all_ns=True)


def cmd_describe(args: argparse.Namespace) -> int:
    from .client import CliError, check_name, list_all, stub
    kind = KINDS.get(args.kind)
    if kind is None:
        raise CliError(f"unknown kind {quote(args.kind)}: use workload, replica or node")
    check_name(f"{kind.lower()} name", args.name)
    s = stub(args)
    ns = "" if kind == "Node" else args.namespace
    where = f" in namespace {ns}" if ns else ""
    if kind == "Workload":
        resp = list_all(args, s.ListWorkloads,
                        control_pb2.ListRequest(namespace=ns, name=args.name))
        if not resp.items:
            raise CliError(f"workload {args.name} not found{where}")
        reps = list_all(args, s.ListReplicas,
                    control_pb2.ListRequest(namespace=ns, workload=args.name))
        text = describe_workload(resp.items[0], resp.summaries[0], reps)
    elif kind == "Replica":
        resp = list_all(args, s.ListReplicas, control_pb2.ListRequest(namespace=ns, name=args.name))
        if not resp.items:
            raise CliError(f"replica {args.name} not found{where}")
        text = describe_replica(resp.items[0], resp.usage[0])
    else:
        resp = list_all(args, s.ListNodes, control_pb2.ListRequest(name=args.name))
        if not resp.items:
            raise CliError(f"node {args.name} not found")
        reps = list_all(args, s.ListReplicas, control_pb2.ListRequest())
        on_node = control_pb2.ReplicaList()
        for r, u in zip(reps.items, reps.usage, strict=True):
            if r.node == args.name:
                on_node.items.append(r)
                on_node.usage.append(u)
        text = describe_node(resp.items[0], resp.allocated[0], resp.usage[0], on_node)
    events = list_all(args, s.ListEvents,
                  control_pb2.EventsRequest(kind=kind, namespace=ns, name=args.name))
    print(text + "\n" + events_section(events))
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    from .client import CliError, list_all, stub
    kind = {"replica": "replicas", "replicas": "replicas", "node": "nodes",
            "nodes": "nodes"}.get(args.kind)
    if kind is None:
        raise CliError(f"unknown kind {quote(args.kind)}: use replicas or nodes")
    s = stub(args)
    if kind == "nodes":
        resp = list_all(args, s.ListNodes, control_pb2.ListRequest())
        rows = []
        for n, u in zip(resp.items, resp.usage, strict=True):
            cap_mem = n.capacity.memory_bytes or 1
            rows.append([n.name, output.cores(u.cpu_cores),
                         f"{100 * u.cpu_cores * 1000 / (n.capacity.cpu_millis or 1):.0f}%",
                         format_bytes_short(u.memory_bytes),
                         f"{100 * u.memory_bytes / cap_mem:.0f}%", str(u.pids)]
                        if n.ready else [n.name, "<unknown>", "", "", "", ""])
        print(output.table(["NAME", "CPU", "CPU%", "MEMORY", "MEMORY%", "PIDS"], rows)
              if rows else "No nodes found.")
        return 0
    ns = "" if args.all_namespaces else args.namespace
    resp = list_all(args, s.ListReplicas, control_pb2.ListRequest(namespace=ns))
    rows = []
    for r, u in zip(resp.items, resp.usage, strict=True):
        if r.status.phase != types_pb2.REPLICA_PHASE_RUNNING:
            continue
        limit = r.spec.resources.memory_bytes
        rows.append(([r.metadata.namespace] if args.all_namespaces else []) + [
            r.metadata.name, r.node, output.cores(u.cpu_cores),
            format_bytes_short(u.memory_bytes),
            f"{100 * u.memory_bytes / limit:.0f}%" if limit else "-", str(u.pids)])
    headers = (["NAMESPACE"] if args.all_namespaces else []) + [
        "NAME", "NODE", "CPU", "MEMORY", "MEM/LIMIT", "PIDS"]
    print(output.table(headers, rows) if rows else
          "No running replicas" + ("" if args.all_namespaces else f" in namespace {ns}") + ".")
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = sub.add_parser("describe", help="one object in detail, with its recent events")
    d.add_argument("kind", help="workload | replica | node")
    d.add_argument("name")
    d.set_defaults(fn=cmd_describe)
    t = sub.add_parser("top", help="current CPU, memory and pids use")
    t.add_argument("kind", help="replicas | nodes")
    t.add_argument("-A", "--all-namespaces", action="store_true")
    t.set_defaults(fn=cmd_top)

"""mctl: the command line of the mctl container orchestrator (see SPEC.md).

Exit codes: 0 success, 1 user or server error (one line on stderr, never a
traceback), 2 usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import NoReturn, cast

import grpc

from mctl.common import names, validation
from mctl.common.spec import SpecError, load_objects
from mctl.v1 import control_pb2, control_pb2_grpc, types_pb2

from . import config, output
from .client import (
    CliError,
    UsageError,
    call,
    check_name,
    list_all,
    one_line,
    rpc_error,
    stub,
)

Listing = (control_pb2.WorkloadList | control_pb2.ReplicaList | control_pb2.NodeList
           | control_pb2.ConfigList | control_pb2.SecretList | control_pb2.VolumeList)

# `apply --wait` is done with a replica once it runs or has already ended.
_SETTLED = frozenset({types_pb2.REPLICA_PHASE_RUNNING, types_pb2.REPLICA_PHASE_SUCCEEDED,
                      types_pb2.REPLICA_PHASE_FAILED})

# -- apply / delete -------------------------------------------------------------


def _load(args: argparse.Namespace) -> control_pb2.ApplyRequest:
    """Every Workload, Config and Secret of -f, as one request (after -n)."""
    try:
        loaded = load_objects(args.filename)
    except SpecError as e:
        raise CliError(str(e)) from None
    request = control_pb2.ApplyRequest()
    for _, obj in loaded:
        if args.namespace_set:
            obj.metadata.namespace = args.namespace
        if isinstance(obj, types_pb2.Config):
            request.configs.append(obj)
        elif isinstance(obj, types_pb2.Secret):
            request.secrets.append(obj)
        else:
            request.workloads.append(obj)
    return request


def cmd_apply(args: argparse.Namespace) -> int:
    request = _load(args)
    workloads = request.workloads
    # What the server would refuse of the request as a whole (each object
    # was checked as it was read): too many, too big, or, after -n, twice.
    problem = validation.apply_problem(workloads, validation.CLIENT_LIMITS)
    if problem is None:
        problem = validation.objects_problem(request.configs, request.secrets,
                                             sum(w.ByteSize() for w in workloads))
    if problem is not None:
        raise CliError(f"{args.filename}: {problem}")
    s = stub(args)
    resp: control_pb2.ApplyResponse = call(args, s.Apply, request)
    for r in resp.results:
        print(f"{(r.kind or 'Workload').lower()}/{r.name} {r.action}")
    if args.wait:
        wait_running(args, s, [(w.metadata.namespace, w.metadata.name) for w in workloads])
    return 0


def wait_running(args: argparse.Namespace, s: control_pb2_grpc.ControlPlaneStub,
                 keys: list[tuple[str, str]]) -> None:
    """Waits until every workload has all its replicas Running (or finished)."""
    deadline = time.monotonic() + args.timeout
    last = ""
    while True:
        pending = []
        for ns, name in keys:
            resp: control_pb2.WorkloadList = list_all(
                args, s.ListWorkloads, control_pb2.ListRequest(namespace=ns, name=name))
            for w, summ in zip(resp.items, resp.summaries, strict=True):
                done = summ.running == w.spec.replicas == summ.up_to_date
                if not done:
                    reps: control_pb2.ReplicaList = list_all(
                        args, s.ListReplicas, control_pb2.ListRequest(namespace=ns, workload=name))
                    finished = [r for r in reps.items if r.status.phase in _SETTLED
                                and not r.metadata.deletion_requested]
                    done = len(finished) == w.spec.replicas == len(reps.items)
                if not done:
                    pending.append(f"{name} {summ.running}/{w.spec.replicas}")
        if not pending:
            return
        line = "waiting: " + ", ".join(pending)
        if line != last and sys.stderr.isatty():
            print(line, file=sys.stderr)
            last = line
        if time.monotonic() > deadline:
            raise CliError(f"timed out after {args.timeout:.0f}s waiting for "
                           + ", ".join(pending))
        time.sleep(0.1)


# delete KIND NAME...: the kinds that can be named, and the request field of each.
_DELETE_KINDS = {"workload": "workloads", "workloads": "workloads", "wl": "workloads",
                 "config": "configs", "configs": "configs",
                 "secret": "secrets", "secrets": "secrets",
                 "volume": "volumes", "volumes": "volumes", "vol": "volumes"}


def _ref(obj: types_pb2.Workload | types_pb2.Config | types_pb2.Secret
         ) -> control_pb2.ObjectRef:
    return control_pb2.ObjectRef(namespace=obj.metadata.namespace, name=obj.metadata.name)


def cmd_delete(args: argparse.Namespace) -> int:
    """Deletes what -f names (workloads first, then what they used) or KIND NAME..."""
    request = control_pb2.DeleteRequest()
    namespace = args.namespace
    if args.filename:
        loaded = _load(args)
        request.workloads.extend(_ref(w) for w in loaded.workloads)
        if loaded.workloads:
            namespace = loaded.workloads[0].metadata.namespace
        objects = control_pb2.DeleteRequest(configs=[_ref(c) for c in loaded.configs],
                                            secrets=[_ref(x) for x in loaded.secrets])
    elif args.kind in _DELETE_KINDS and args.names:
        field = _DELETE_KINDS[args.kind]
        for name in args.names:
            check_name(f"{field[:-1]} name", name)
        getattr(request, field).extend(control_pb2.ObjectRef(namespace=args.namespace, name=n)
                                       for n in args.names)
        objects = control_pb2.DeleteRequest()
    else:
        raise UsageError("say what to delete: -f FILE, or workload|config|secret|volume NAME...")
    s = stub(args)
    missing: list[str] = []
    found: list[control_pb2.DeleteResult] = []
    if request.workloads or request.configs or request.secrets or request.volumes:
        resp: control_pb2.DeleteResponse = call(args, s.Delete, request)
        found += [r for r in resp.results if r.found]
        missing += [f"{(r.kind or 'Workload').lower()} {r.name}" for r in resp.results
                    if not r.found]
    # Said before waiting: the deletion is requested, whatever the wait finds.
    for r in found:
        print(f"{(r.kind or 'Workload').lower()}/{r.name} deleted", flush=True)
    workloads = [(r.namespace or "default", r.name) for r in found
                 if r.kind in ("", "Workload")]
    if args.wait or objects.configs or objects.secrets:
        # A Config or Secret is refused while a workload uses it: the
        # workloads of the same file go first, all the way.
        wait_gone(args, s, workloads)
    if objects.configs or objects.secrets:
        resp = call(args, s.Delete, objects)
        for r in resp.results:
            if r.found:
                print(f"{r.kind.lower()}/{r.name} deleted")
            else:
                missing.append(f"{r.kind.lower()} {r.name}")
    if missing:
        raise CliError(f"{', '.join(missing)} not found in namespace {namespace}")
    return 0


def wait_gone(args: argparse.Namespace, s: control_pb2_grpc.ControlPlaneStub,
              keys: list[tuple[str, str]]) -> None:
    """Waits until the workloads and all their replicas are gone.

    The delete itself is done when this starts; what is left is the
    controller stopping replicas, thousands of them for a big workload. So
    --timeout counts from the last progress (a replica fewer), not from the
    start, and a poll the server could not answer in time (busy removing
    them) is retried rather than reported as a failed delete.
    """
    deadline = time.monotonic() + args.timeout
    before: dict[str, int] | None = None
    while True:
        left: dict[str, int] = {}
        try:
            for ns, name in keys:
                resp: control_pb2.WorkloadList = list_all(
                    args, s.ListWorkloads, control_pb2.ListRequest(namespace=ns, name=name))
                for w, summary in zip(resp.items, resp.summaries, strict=True):
                    left[w.metadata.name] = summary.present
        except CliError as e:
            if not e.transient:
                raise
            left = before or {}
        else:
            if not left:
                return
            if left != before:
                deadline = time.monotonic() + args.timeout
                before = left
        if time.monotonic() > deadline:
            stopping = sum(left.values())
            raise CliError(f"deletion of {', '.join(left) or 'the workloads'} was requested,"
                           f" but {stopping} replicas were still stopping after"
                           f" {args.timeout:g}s without progress (they are removed in the"
                           " background: mctl get replicas)")
        time.sleep(0.1 if sum(left.values()) < 100 else 1.0)


# -- get ---------------------------------------------------------------------------------

KINDS = {"workload": "workloads", "workloads": "workloads", "wl": "workloads",
         "replica": "replicas", "replicas": "replicas", "rep": "replicas",
         "node": "nodes", "nodes": "nodes", "no": "nodes",
         "config": "configs", "configs": "configs",
         "secret": "secrets", "secrets": "secrets",
         "volume": "volumes", "volumes": "volumes", "vol": "volumes"}


def cmd_get(args: argparse.Namespace) -> int:
    kind = KINDS.get(args.kind)
    if kind is None:
        raise CliError(f"unknown kind {names.quote(args.kind)}: use workloads, replicas, nodes,"
                       " configs, secrets or volumes")
    if args.name:
        check_name(f"{kind[:-1]} name", args.name)
    s = stub(args)
    namespace = "" if args.all_namespaces or kind == "nodes" else args.namespace
    request = control_pb2.ListRequest(namespace=namespace, name=args.name or "")
    fetch = {"workloads": s.ListWorkloads, "replicas": s.ListReplicas, "nodes": s.ListNodes,
             "configs": s.ListConfigs, "secrets": s.ListSecrets,
             "volumes": s.ListVolumes}[kind]
    previous = None
    while True:
        resp: Listing = list_all(args, fetch, request)
        if args.name and not resp.items:
            raise CliError(f"{kind[:-1]} {args.name} not found"
                           + (f" in namespace {namespace}" if namespace else ""))
        text = render(kind, resp, args)
        if text != previous:
            if previous is not None and args.output in ("table", "wide"):
                print()
            print(text, flush=True)
            previous = text
        if not args.watch:
            return 0
        time.sleep(1.0)


def render(kind: str, resp: Listing, args: argparse.Namespace) -> str:
    if args.output in ("json", "yaml"):
        return output.documents(resp, args.output)
    wide = args.output == "wide"
    if not resp.items:
        where = "" if args.all_namespaces or kind == "nodes" else f" in namespace {args.namespace}"
        return f"No {kind} found{where}."
    if isinstance(resp, control_pb2.WorkloadList):
        return output.workloads(resp, wide, args.all_namespaces)
    if isinstance(resp, control_pb2.ReplicaList):
        return output.replicas(resp, wide, args.all_namespaces)
    if isinstance(resp, control_pb2.ConfigList):
        return output.configs(resp, args.all_namespaces)
    if isinstance(resp, control_pb2.SecretList):
        return output.secrets(resp, args.all_namespaces)
    if isinstance(resp, control_pb2.VolumeList):
        return output.volumes(resp, args.all_namespaces)
    return output.nodes(resp, wide)


# -- parser ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line like every other mctl error.

    (Subcommands' parsers are of the class of their parent.)
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mctl", description="mctl: a small container orchestrator")
    p.add_argument("--server", default=None, help="scheduler address (or MCTL_SERVER)")
    p.add_argument("--tls-ca", default=None, help="cluster CA certificate (or MCTL_TLS_CA)")
    p.add_argument("--tls-cert", default=None, help="your certificate (or MCTL_TLS_CERT)")
    p.add_argument("--tls-key", default=None, help="your private key (or MCTL_TLS_KEY)")
    p.add_argument("--insecure", action="store_true",
                   help="plain-text gRPC to a cluster started with --insecure (or MCTL_INSECURE=1)")
    p.add_argument("-n", "--namespace", default=None)
    # Typed as the base class, which every verb module's add_parser takes.
    sub = cast("argparse._SubParsersAction[argparse.ArgumentParser]",
               p.add_subparsers(dest="command", metavar="COMMAND"))
    sub.required = True

    a = sub.add_parser("apply", help="create or update workloads, configs and secrets from a file")
    a.add_argument("-f", "--filename", required=True, help="FILE, DIR or - for stdin")
    a.add_argument("--wait", action="store_true", help="wait until every replica runs")
    a.add_argument("--timeout", type=float, default=120.0)
    a.set_defaults(fn=cmd_apply)

    d = sub.add_parser("delete", help="delete workloads (and their containers), configs,"
                                      " secrets or volumes")
    d.add_argument("kind", nargs="?", help="workload | config | secret | volume")
    d.add_argument("names", nargs="*")
    d.add_argument("-f", "--filename")
    d.add_argument("--wait", default=True, action=argparse.BooleanOptionalAction,
                   help="wait until the containers are gone (default)")
    d.add_argument("--timeout", type=float, default=120.0)
    d.set_defaults(fn=cmd_delete)

    g = sub.add_parser("get", help="list workloads, replicas, nodes, configs, secrets or volumes")
    g.add_argument("kind", help="workloads | replicas | nodes | configs | secrets | volumes")
    g.add_argument("name", nargs="?")
    g.add_argument("-o", "--output", choices=["table", "wide", "json", "yaml"], default="table")
    g.add_argument("-w", "--watch", action="store_true")
    g.add_argument("-A", "--all-namespaces", action="store_true")
    g.set_defaults(fn=cmd_get)

    from . import debug, describe, logs, nodes, remote_exec
    logs.add_parser(sub)
    debug.add_parser(sub)
    describe.add_parsers(sub)
    remote_exec.add_parser(sub)
    nodes.add_parsers(sub)
    from . import cluster
    cluster.add_parser(sub)
    from . import certs
    certs.add_parser(sub)
    from . import image
    image.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.namespace_set = args.namespace is not None
    args.namespace = args.namespace or os.environ.get("MCTL_NAMESPACE") or "default"
    args.server_address = config.server(args.server)
    try:
        if problem := names.validate_dns_label(args.namespace):
            raise UsageError(f"namespace: {problem}")
        code = args.fn(args)
    except grpc.RpcError as e:  # a call the command did not wrap itself
        print(f"mctl: {rpc_error(args, e)}", file=sys.stderr)
        code = 1
    except CliError as e:
        print(f"mctl: {one_line(str(e))}", file=sys.stderr)
        code = e.exit_code
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        code = 0
    sys.exit(code)


if __name__ == "__main__":
    main()

"""mctl: the command line of the mctl container orchestrator (see SPEC.md).

Exit codes: 0 success, 1 user or server error (one line on stderr, never a
traceback), 2 usage error.

Start time is paid by every call, so this module imports only what the verb
at hand needs: gRPC and the generated messages when a call is made, YAML
when a file is read, and of the other verb modules only the one whose verb
was given (`_VERB_MODULES`; `mctl --help` imports none). The global flags
(--server, -n, --context, TLS) are taken anywhere on the line, before or
after the verb, as kubectl takes them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from typing import TYPE_CHECKING, Any, NoReturn, cast

from mctl.common import lazyload, names

from . import config
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

if TYPE_CHECKING:
    from mctl.v1 import control_pb2, control_pb2_grpc, types_pb2

    from .output import Listing

# -- apply / delete -------------------------------------------------------------


def cmd_apply(args: argparse.Namespace) -> int:
    from .applyfile import checked

    request = checked(args)
    workloads = request.workloads
    s = stub(args)
    if args.dry_run == "server":
        from .rollout import plan_line

        request.dry_run = True
        resp: control_pb2.ApplyResponse = call(args, s.Apply, request)
        for r in resp.results:
            print(plan_line(r))
        return 0
    resp = call(args, s.Apply, request)
    for r in resp.results:
        print(f"{(r.kind or 'Workload').lower()}/{r.name} {r.action}")
    if args.wait:
        wait_running(args, s, [(w.metadata.namespace, w.metadata.name) for w in workloads])
    return 0


def wait_running(args: argparse.Namespace, s: control_pb2_grpc.ControlPlaneStub,
                 keys: list[tuple[str, str]]) -> None:
    """Waits until every workload has all its replicas Running (or finished)."""
    from mctl.v1 import control_pb2, types_pb2

    # Done with a replica once it runs or has already ended.
    settled = (types_pb2.REPLICA_PHASE_RUNNING, types_pb2.REPLICA_PHASE_SUCCEEDED,
               types_pb2.REPLICA_PHASE_FAILED)
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
                    finished = [r for r in reps.items if r.status.phase in settled
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
    from mctl.v1 import control_pb2

    return control_pb2.ObjectRef(namespace=obj.metadata.namespace, name=obj.metadata.name)


def cmd_delete(args: argparse.Namespace) -> int:
    """Deletes what -f names (workloads first, then what they used) or KIND NAME..."""
    from mctl.v1 import control_pb2

    request = control_pb2.DeleteRequest()
    namespace = args.namespace
    if args.filename:
        from .applyfile import load

        loaded = load(args)
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
    from mctl.v1 import control_pb2

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
    selector = _check_get_flags(args)
    namespace = "" if args.all_namespaces or kind == "nodes" else args.namespace
    if args.watch:
        # A server stream of changes (cli/watch.py), not a poll.
        if kind not in ("workloads", "replicas", "nodes"):
            raise UsageError(f"get -w: {kind} cannot be watched; workloads, replicas and"
                             " nodes can")
        from . import watch
        return watch.watch(args, kind, namespace, args.name or "", selector)
    from mctl.v1 import control_pb2

    s = stub(args)
    request = control_pb2.ListRequest(namespace=namespace, name=args.name or "",
                                      label_selector=selector)
    fetch = {"workloads": s.ListWorkloads, "replicas": s.ListReplicas, "nodes": s.ListNodes,
             "configs": s.ListConfigs, "secrets": s.ListSecrets,
             "volumes": s.ListVolumes}[kind]
    resp: Listing = list_all(args, fetch, request)
    if args.name and not resp.items:
        raise CliError(f"{kind[:-1]} {args.name} not found"
                       + (f" in namespace {namespace}" if namespace else ""))
    text = render(kind, resp, args)
    # A template prints exactly what it says, no newline added (as kubectl's);
    # `-o name` of nothing prints nothing (`for r in $(mctl get ... -o name)`).
    if text:
        print(text, flush=True, end="" if args.output.startswith("jsonpath=") else "\n")
    return 0


# -o's plain choices; `jsonpath=TEMPLATE` and `custom-columns=SPEC` take a value.
_OUTPUTS = ("table", "wide", "json", "yaml", "name")
_TEMPLATED = ("jsonpath", "custom-columns")


def _check_get_flags(args: argparse.Namespace) -> str:
    """Refuses a bad -o, -l or --sort-by before dialling; returns the selector to send."""
    fmt, eq, value = args.output.partition("=")
    if not (args.output in _OUTPUTS or (eq and fmt in _TEMPLATED)):
        raise UsageError(f"-o/--output: {names.quote(args.output)} is not an output format:"
                         " use table, wide, json, yaml, name, jsonpath=TEMPLATE or"
                         " custom-columns=NAME:.path,...")
    if fmt in _TEMPLATED or args.sort_by:
        from . import columns, jsonpath
        try:
            if fmt == "jsonpath":
                jsonpath.parse_template(value)
            elif fmt == "custom-columns":
                for _, path in columns.parse_columns(value):
                    jsonpath.compile_path(path)
        except jsonpath.TemplateError as e:
            raise UsageError(f"-o/--output: {e}") from None
        try:
            if args.sort_by:
                jsonpath.compile_path(args.sort_by)
        except jsonpath.TemplateError as e:
            raise UsageError(f"--sort-by: {e}") from None
    selector: str = args.selector or ""
    if selector:
        from mctl.common import selectors
        try:
            selectors.parse(selector)
        except selectors.SelectorError as e:
            raise UsageError(f"-l/--selector: {e}") from None
    if args.watch and (args.sort_by or args.output not in _OUTPUTS[:4]):
        raise UsageError("get -w: --sort-by and -o name|jsonpath|custom-columns are for"
                         " a list, not a watch")
    return selector


def render(kind: str, resp: Listing, args: argparse.Namespace) -> str:
    from . import output

    fmt, _, value = args.output.partition("=")
    if getattr(args, "sort_by", None) and len(resp.items) > 1:
        from . import columns
        output.reorder(resp, columns.sort_order(args.sort_by, output.item_dicts(resp)))
    if fmt in ("json", "yaml"):
        return output.documents(resp, fmt)
    if fmt == "name":
        from . import columns
        return columns.names(kind[:-1], output.item_dicts(resp))
    if fmt == "jsonpath":
        from . import jsonpath
        docs = output.item_dicts(resp)
        # With a NAME, kubectl's template is over the object; else over the list.
        root: object = docs[0] if args.name and len(docs) == 1 else {"items": docs}
        return jsonpath.render(value, root)
    if not resp.items:
        where = "" if args.all_namespaces or kind == "nodes" else f" in namespace {args.namespace}"
        return f"No {kind} found{where}."
    if fmt == "custom-columns":
        from . import columns
        return output.table(*columns.custom_columns(value, output.item_dicts(resp)))
    headers, rows = output.rows(resp, fmt == "wide", args.all_namespaces)
    if getattr(args, "show_labels", False) and "LABELS" not in headers:
        headers.append("LABELS")
        for row, labels in zip(rows, output.labels(resp), strict=True):
            row.append(labels)
    return output.table(headers, rows)


# -- parser ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line like every other mctl error.

    (Subcommands' parsers are of the class of their parent.)
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {one_line(message)} (see {self.prog} --help)\n")


# The flags every verb takes, before or after it (kubectl's habit): option
# strings and add_argument keywords. A verb's own flag of the same spelling
# wins there (`cluster up --insecure`).
_GLOBAL_FLAGS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--server",), {"help": "scheduler address (or MCTL_SERVER)"}),
    (("--tls-ca",), {"help": "cluster CA certificate (or MCTL_TLS_CA)"}),
    (("--tls-cert",), {"help": "your certificate (or MCTL_TLS_CERT)"}),
    (("--tls-key",), {"help": "your private key (or MCTL_TLS_KEY)"}),
    (("--insecure",), {"action": "store_true", "help": "plain-text gRPC to a cluster started"
                       " with --insecure (or MCTL_INSECURE=1)"}),
    (("-n", "--namespace"), {"help": "the namespace (or MCTL_NAMESPACE; default: default)"}),
    (("--context",), {"help": "the config context to use (or MCTL_CONTEXT): mctl config"
                      " get-contexts"}),
]
# The global flags that take a value, for finding the verb before parsing.
_VALUED = frozenset(f for flags, kw in _GLOBAL_FLAGS if "action" not in kw for f in flags)

# Every verb of another module: (the module that registers it, its help line).
# A call imports only its verb's module, and `mctl --help` none: the lines
# are here so the list can be shown without importing each module
# (tests/unit/test_cli_parser.py checks they match what the modules say).
# A verb missing here still works, at the cost of importing every module.
_VERBS: dict[str, tuple[str, str]] = {
    "logs": ("logs", "a replica's stdout and stderr, or a workload's merged"),
    "debug": ("debug", "talk to one node's agent directly"),
    "describe": ("describe", "one object in detail, with its recent events"),
    "top": ("describe", "current CPU, memory and pids use"),
    "exec": ("remote_exec", "run a command inside a running replica"),
    "cordon": ("nodes", "keep new replicas off a node"),
    "uncordon": ("nodes", "let new replicas onto a node again"),
    "drain": ("nodes", "cordon a node and move its replicas elsewhere"),
    "cluster": ("cluster", "a local cluster on this machine: up, down, status, stop-node,"
                " restart-node, backup, restore"),
    "certs": ("certs", "make the cluster CA and certificates: init, issue, show"),
    "image": ("image", "import, pull, list and remove images on the cluster's nodes"),
    "config": ("contexts", "the clusters this CLI knows (contexts): get-contexts,"
               " use-context, current-context, set-context, delete-context"),
    "completion": ("completion", "a bash or zsh completion script for mctl"),
    "scale": ("rollout", "set a workload's number of replicas"),
    "rollout": ("rollout", "a workload's rolling update: status, history, undo, restart"),
    "diff": ("rollout", "what an apply of a file would change, as a unified diff"
             " (nothing stored)"),
    "events": ("events", "recent events (-w: and new ones as they happen)"),
    "version": ("version", "the versions of this mctl and of the server"),
}


def _add_globals(p: argparse.ArgumentParser, top: bool) -> None:
    for flags, kw in _GLOBAL_FLAGS:
        free = [f for f in flags if f not in p._option_string_actions]
        if not free:
            continue
        dest = flags[-1].lstrip("-").replace("-", "_")
        if top:
            p.add_argument(*free, dest=dest, **kw)
        else:
            # Set only when given after the verb, so that a value given before
            # it is not overwritten by a default; listed once, in `mctl --help`.
            p.add_argument(*free, dest=dest, **(kw | {"default": argparse.SUPPRESS,
                                                      "help": argparse.SUPPRESS}))


def _subparsers(p: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every verb's (and sub-verb's) parser under `p`."""
    found: list[argparse.ArgumentParser] = []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if child not in found:
                    found.append(child)
                    found += [c for c in _subparsers(child) if c not in found]
    return found


def _root() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction[argparse.ArgumentParser]]:
    p = _Parser(prog="mctl", description="mctl: a small container orchestrator")
    _add_globals(p, top=True)
    # Typed as the base class, which every verb module's add_parser takes.
    sub = cast("argparse._SubParsersAction[argparse.ArgumentParser]",
               p.add_subparsers(dest="command", metavar="COMMAND"))
    sub.required = True
    return p, sub


def _add_core(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The verbs of this module: apply, delete, get."""
    a = sub.add_parser("apply", help="create or update workloads, configs and secrets from a file")
    a.add_argument("-f", "--filename", required=True, help="FILE, DIR or - for stdin")
    a.add_argument("--wait", action="store_true", help="wait until every replica runs")
    a.add_argument("--timeout", type=float, default=120.0)
    a.add_argument("--dry-run", nargs="?", const="server", default="none",
                   choices=["none", "server"],
                   help="--dry-run or --dry-run=server: the server validates and says what it"
                        " would do; nothing is stored")
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

    g = sub.add_parser(
        "get", help="list workloads, replicas, nodes, configs, secrets or volumes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  mctl get replicas -n shop -l app=web,tier!=db --show-labels\n"
               "  mctl get replicas -o custom-columns=NAME:.metadata.name,NODE:.node"
               " --sort-by=.node\n"
               "  mctl get workloads -o jsonpath='{range .items[*]}{.metadata.name}{\"\\n\"}"
               "{end}'\n"
               "  mctl get nodes -o name")
    g.add_argument("kind", help="workloads | replicas | nodes | configs | secrets | volumes")
    g.add_argument("name", nargs="?")
    g.add_argument("-o", "--output", default="table", metavar="FORMAT",
                   help="table (default), wide, json, yaml, name, jsonpath=TEMPLATE or"
                        " custom-columns=HEADER:.path,... (JSONPaths over the -o json form)")
    g.add_argument("-l", "--selector", metavar="SELECTOR",
                   help="only objects whose labels match: key=value, key!=value, key, !key,"
                        " key in (a,b), key notin (a,b), comma-separated")
    g.add_argument("--show-labels", action="store_true", help="add a LABELS column")
    g.add_argument("--sort-by", metavar="JSONPATH",
                   help="order the items by this field of their -o json form, e.g."
                        " .metadata.name")
    g.add_argument("-w", "--watch", action="store_true")
    g.add_argument("-A", "--all-namespaces", action="store_true")
    g.set_defaults(fn=cmd_get)


def _register(sub: argparse._SubParsersAction[argparse.ArgumentParser], module: str) -> None:
    """Adds the verbs of cli/`module`.py (its add_parser or add_parsers)."""
    mod = importlib.import_module(f"{__package__ or 'mctl.cli'}.{module}")
    add = getattr(mod, "add_parsers", None) or mod.add_parser
    add(sub)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, every verb's module imported (help, completion, tests)."""
    p, sub = _root()
    _add_core(sub)
    for module in dict.fromkeys(m for m, _ in _VERBS.values()):
        _register(sub, module)
    return _finish(p)


def _finish(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    for child in _subparsers(p):
        _add_globals(child, top=False)
    return p


def _verb_of(argv: list[str]) -> str | None:
    """The verb on the command line (None before one, or with -h ahead of it)."""
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg == "--":
            return argv[i + 1] if i + 1 < len(argv) else None
        elif arg in ("-h", "--help"):
            return None
        elif arg.startswith("-"):
            skip = arg in _VALUED
        else:
            return arg
    return None


def parser_for(argv: list[str]) -> argparse.ArgumentParser:
    """A parser for this command line that imports only what its verb needs."""
    verb = _verb_of(argv)
    p, sub = _root()
    _add_core(sub)
    if verb is None:
        # Only the list of verbs can be shown or asked for: each is a placeholder.
        for name, (_, text) in _VERBS.items():
            sub.add_parser(name, help=text)
    elif verb in _VERBS:
        _register(sub, _VERBS[verb][0])
    elif verb not in ("apply", "delete", "get"):
        return build_parser()
    return _finish(p)


def main(argv: list[str] | None = None) -> None:
    """The CLI; `argv` None means it is the process (the `mctl` command), see _end."""
    as_process = argv is None
    argv = sys.argv[1:] if argv is None else argv
    args = parser_for(argv).parse_args(argv)
    # gRPC's asyncio half and protobuf's pure-Python classes load only if used
    # (common/lazyload.py): 30 ms of the 110 a call took.
    lazyload.defer(lazyload.GRPC_ASYNCIO + lazyload.GRPC_BUNDLED_ROOTS
                   + lazyload.PROTOBUF_PYTHON)
    args.namespace_set = args.namespace is not None
    args.namespace = args.namespace or os.environ.get("MCTL_NAMESPACE") or "default"
    try:
        config.select(args.context)
        args.server_address = config.server(args.server)
        if problem := names.validate_dns_label(args.namespace):
            raise UsageError(f"namespace: {problem}")
        code = args.fn(args)
    except CliError as e:
        print(f"mctl: {one_line(str(e))}", file=sys.stderr)
        code = e.exit_code
    except config.ConfigError as e:
        print(f"mctl: {one_line(str(e))}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        code = 0
    except Exception as e:
        # A call the command did not wrap itself. gRPC is imported by the
        # commands that call; if it was not, no gRPC error can be here.
        grpc = sys.modules.get("grpc")
        if grpc is None or not isinstance(e, grpc.RpcError):
            raise
        print(f"mctl: {rpc_error(args, e)}", file=sys.stderr)
        code = 1
    if as_process:
        _end(code)
    sys.exit(code)


def _end(code: int) -> NoReturn:
    """Ends the process with `code` once its output is out, skipping the interpreter's teardown.

    Tearing down (modules, gRPC's channel and threads) took 17 ms of CPU
    after the answer was printed, and 100-280 ms of wall time while an
    apply's containers were starting on the same cores. The CLI leaves
    nothing for it to do: files are closed where they are written, temporary
    ones removed by their `with` blocks, and what `cluster up` starts runs
    in sessions of its own.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):
            pass        # the reader has gone (mctl get | head), or the stream was closed
    os._exit(code)


if __name__ == "__main__":
    main()

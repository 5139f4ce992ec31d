"""`mctl scale`, `mctl rollout status|history|undo|restart` and `mctl diff`, as kubectl spells them.

- `scale workload NAME --replicas N` changes spec.replicas alone: no new
  revision, no replica replaced.
- `rollout status` waits until every replica runs the current spec and is
  ready, and no old one is left, printing each step as kubectl does;
  `--timeout` ends the wait with exit 1 and one line.
- `rollout history` lists the spec revisions the scheduler keeps (the last
  10, scheduler/revisions.py); `--revision N` shows one.
- `rollout undo` goes back to the previous revision (or `--to-revision
  N`) as a new revision, rolled under the update strategy.
- `rollout restart` replaces every replica under the update strategy with
  no change to what runs.
- `diff -f FILE` asks the server to plan an apply of FILE (a dry run:
  validated and planned there, nothing stored) and prints a unified diff of
  each object as stored and as it would be, in YAML. Secrets' values are
  masked by the server and never reach the client. Exit codes are kubectl's:
  0 no differences, 1 differences, 2 an error.

The server's plan is also what `apply --dry-run` prints (`plan_line`).
"""

from __future__ import annotations

import argparse
import difflib
import math
import sys
import time
from typing import TYPE_CHECKING, Any

from .client import CliError, UsageError, call, check_name, list_all, stub

if TYPE_CHECKING:
    from mctl.v1 import control_pb2

# The kinds these verbs act on, as kubectl users type them.
_WORKLOAD_KINDS = ("workload", "workloads", "wl")
# `rollout status` asks this often; a rollout takes seconds, not milliseconds.
_POLL_SECONDS = 0.5
# kubectl waits without end by default; a bound is kinder to scripts and CI.
DEFAULT_STATUS_TIMEOUT = 600.0


def _target(args: argparse.Namespace) -> str:
    """The workload's name from `workload NAME` or `workload/NAME`."""
    kind, name = args.kind, args.name
    if name is None:
        kind, slash, name = kind.partition("/")
        if not slash:
            raise UsageError(f"say which workload: {args.command} workload NAME")
    if kind not in _WORKLOAD_KINDS:
        raise UsageError(f"{args.command} acts on workloads, not {kind[:60]!r}:"
                         " use workload NAME")
    check_name("workload name", name)
    return str(name)


def duration(text: str) -> float:
    """Seconds from "90", "90s", "5m" or "1h" (argparse type)."""
    scale = {"s": 1, "m": 60, "h": 3600}.get(text[-1:], None)
    number = text[:-1] if scale is not None else text
    try:
        value = float(number) * (scale or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} is not a duration (e.g. 90s, 5m, 1h)") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: must be more than 0")
    return value


def _whole(text: str, maximum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number") from None
    if not 0 <= value <= maximum:
        raise argparse.ArgumentTypeError(f"must be 0 to {maximum}, not {text[:40]}")
    return value


def _count(text: str) -> int:
    """A replica count: the field is an int32 (the server's --max-replicas bounds it further)."""
    return _whole(text, 2**31 - 1)


def _revision(text: str) -> int:
    return _whole(text, 2**63 - 1)


# -- scale ----------------------------------------------------------------------------


def cmd_scale(args: argparse.Namespace) -> int:
    from mctl.v1 import control_pb2

    name = _target(args)
    resp: control_pb2.ScaleResponse = call(args, stub(args).Scale, control_pb2.ScaleRequest(
        namespace=args.namespace, name=name, replicas=args.replicas))
    print(f"workload/{name} scaled" if resp.changed
          else f"workload/{name} unchanged (already {resp.previous} replicas)")
    return 0


# -- rollout --------------------------------------------------------------------------


def progress(name: str, w: Any, summary: control_pb2.WorkloadSummary) -> str | None:
    """kubectl's line for where a rollout is, or None once it is complete."""
    desired = w.spec.replicas
    waiting = f'Waiting for workload "{name}" rollout to finish: '
    if summary.up_to_date < desired:
        return waiting + (f"{summary.up_to_date} out of {desired} new replicas have been"
                          " updated...")
    if summary.present > summary.up_to_date:
        return waiting + (f"{summary.present - summary.up_to_date} old replicas are pending"
                          " termination...")
    if summary.up_to_date_ready < desired:
        return waiting + (f"{summary.up_to_date_ready} of {desired} updated replicas are"
                          " available...")
    return None


def cmd_rollout_status(args: argparse.Namespace) -> int:
    from mctl.v1 import control_pb2

    name = _target(args)
    s = stub(args)
    deadline = time.monotonic() + args.timeout
    last = None
    while True:
        try:
            resp: control_pb2.WorkloadList = list_all(
                args, s.ListWorkloads, control_pb2.ListRequest(namespace=args.namespace,
                                                               name=name))
        except CliError as e:
            if not e.transient or time.monotonic() > deadline:
                raise
        else:
            if not resp.items:
                raise CliError(f"workload {name} not found in namespace {args.namespace}")
            w, summary = resp.items[0], resp.summaries[0]
            if w.metadata.deletion_requested:
                raise CliError(f"workload {name} is being deleted")
            line = progress(name, w, summary)
            if line is None:
                print(f'workload "{name}" successfully rolled out', flush=True)
                return 0
            if line != last:
                print(line, flush=True)
                last = line
        if time.monotonic() > deadline:
            what = last.split(": ", 1)[1] if last else "no answer"
            raise CliError(f"timed out after {args.timeout:g}s waiting for workload {name}"
                           f" to roll out: {what}")
        time.sleep(_POLL_SECONDS)


def cmd_rollout_history(args: argparse.Namespace) -> int:
    import yaml

    from mctl.common.spec import workload_to_dict
    from mctl.v1 import control_pb2, types_pb2

    from . import output

    name = _target(args)
    resp: control_pb2.RolloutHistoryResponse = call(
        args, stub(args).RolloutHistory,
        control_pb2.RolloutHistoryRequest(namespace=args.namespace, name=name))
    if args.revision is not None:
        found = [r for r in resp.revisions if r.number == args.revision]
        if not found:
            kept = ", ".join(str(r.number) for r in resp.revisions) or "none"
            raise CliError(f"revision {args.revision} of workload {name} not found"
                           f" (kept: {kept})")
        rev = found[0]
        w = types_pb2.Workload(spec=rev.spec)
        w.metadata.name, w.metadata.namespace = name, args.namespace
        print(f"workload/{name} with revision #{rev.number}")
        print(f"Change cause: {rev.change_cause or '<none>'}")
        print(f"Created: {output.age(rev.created_unix_ms)} ago")
        print(yaml.safe_dump({"spec": workload_to_dict(w)["spec"]}, sort_keys=False), end="")
        return 0
    print(f"workload/{name}")
    if not resp.revisions:
        print("No revisions kept.")
        return 0
    rows = [[str(r.number), output.age(r.created_unix_ms),
             r.spec.image + (f"@{r.spec.image_digest[:19]}" if r.spec.image_digest else ""),
             r.change_cause or "<none>", "*" if r.number == resp.current else ""]
            for r in resp.revisions]
    print(output.table(["REVISION", "AGE", "IMAGE", "CHANGE-CAUSE", "CURRENT"], rows))
    return 0


def cmd_rollout_undo(args: argparse.Namespace) -> int:
    from mctl.v1 import control_pb2

    name = _target(args)
    resp: control_pb2.RolloutChangeResponse = call(
        args, stub(args).RolloutUndo, control_pb2.RolloutUndoRequest(
            namespace=args.namespace, name=name, to_revision=args.to_revision))
    print(f"workload/{name} {resp.message}")
    return 0


def cmd_rollout_restart(args: argparse.Namespace) -> int:
    from mctl.v1 import control_pb2

    name = _target(args)
    resp: control_pb2.RolloutChangeResponse = call(
        args, stub(args).RolloutRestart,
        control_pb2.RolloutRestartRequest(namespace=args.namespace, name=name))
    print(f"workload/{name} {resp.message}")
    return 0


# -- dry run and diff --------------------------------------------------------------------


def plan_line(r: control_pb2.ApplyResult) -> str:
    """One result of an apply --dry-run: what would happen to the object."""
    what = f"{(r.kind or 'Workload').lower()}/{r.name} {r.action}"
    if r.action == "configured":
        if r.rolled_workloads:
            what += f", rolls workload{'s' if len(r.rolled_workloads) > 1 else ''} " + \
                ", ".join(r.rolled_workloads)
        elif r.rolls:
            what += ", rolls its replicas"
        else:
            what += " in place"
    return what + " (server dry run)"


def _yaml(r: control_pb2.ApplyResult, planned: bool) -> str:
    """The object of a dry-run result as YAML ("" if there is none), as `get -o yaml` shows it."""
    import yaml

    from mctl.common.spec import config_to_dict, workload_to_dict
    from mctl.v1 import types_pb2

    doc: dict[str, Any] | None = None
    if r.kind in ("", "Workload"):
        w = r.planned_workload if planned else r.stored_workload
        doc = workload_to_dict(w) if w.ByteSize() else None
    elif r.kind == "Config":
        c = r.planned_config if planned else r.stored_config
        doc = config_to_dict(c) if c.ByteSize() else None
    elif r.kind == "Secret":
        x = r.planned_secret if planned else r.stored_secret
        if x.ByteSize():
            # The server masked every value; shown in the Config's shape.
            shape = types_pb2.Config(metadata=x.metadata, data={
                k: v.decode(errors="replace") for k, v in x.data.items()})
            doc = config_to_dict(shape) | {"kind": "Secret"}
    return yaml.safe_dump(doc, sort_keys=False) if doc is not None else ""


def unified(r: control_pb2.ApplyResult) -> list[str]:
    """The lines of `diff -u` between the object as stored and as the apply would store it."""
    name = f"{(r.kind or 'Workload').lower()}.{r.namespace}.{r.name}"
    return list(difflib.unified_diff(
        _yaml(r, planned=False).splitlines(keepends=True),
        _yaml(r, planned=True).splitlines(keepends=True),
        fromfile=f"live/{name}", tofile=f"merged/{name}"))


class DiffError(CliError):
    """diff's failures exit 2: 1 means "there are differences" (kubectl's codes)."""

    exit_code = 2


def cmd_diff(args: argparse.Namespace) -> int:
    try:
        from .applyfile import checked

        request = checked(args)
        request.dry_run = True
        resp: control_pb2.ApplyResponse = call(args, stub(args).Apply, request)
    except CliError as e:
        raise DiffError(str(e)) from None
    differs = False
    for r in resp.results:
        lines = unified(r)
        if lines:
            differs = True
            sys.stdout.writelines(line if line.endswith("\n") else line + "\n"
                                  for line in lines)
    sys.stdout.flush()
    return 1 if differs else 0


# -- parsers ---------------------------------------------------------------------------


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", metavar="workload", help="workload NAME, or workload/NAME")
    p.add_argument("name", nargs="?", metavar="NAME")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    s = sub.add_parser(
        "scale", help="set a workload's number of replicas", formatter_class=raw,
        epilog="examples:\n  mctl scale workload web --replicas 5\n"
               "  mctl scale workload/web --replicas 0 -n shop")
    _target_args(s)
    s.add_argument("--replicas", type=_count, required=True, metavar="N")
    s.set_defaults(fn=cmd_scale)

    r = sub.add_parser(
        "rollout", help="a workload's rolling update: status, history, undo, restart",
        formatter_class=raw,
        epilog="examples:\n  mctl rollout status workload web\n"
               "  mctl rollout history workload web\n  mctl rollout undo workload web\n"
               "  mctl rollout restart workload web")
    what = r.add_subparsers(dest="rollout_command", metavar="COMMAND")
    what.required = True
    st = what.add_parser(
        "status", help="wait until the update is complete, showing its progress",
        formatter_class=raw,
        epilog="examples:\n  mctl rollout status workload web\n"
               "  mctl rollout status workload/web --timeout 2m")
    _target_args(st)
    st.add_argument("--timeout", type=duration, default=DEFAULT_STATUS_TIMEOUT,
                    metavar="DURATION",
                    help=f"give up after this long (90s, 5m; default {DEFAULT_STATUS_TIMEOUT:g}s)")
    st.set_defaults(fn=cmd_rollout_status)
    h = what.add_parser(
        "history", help="the spec revisions kept (the last 10)", formatter_class=raw,
        epilog="examples:\n  mctl rollout history workload web\n"
               "  mctl rollout history workload web --revision 2")
    _target_args(h)
    h.add_argument("--revision", type=_revision, default=None, metavar="N",
                   help="show this revision's spec")
    h.set_defaults(fn=cmd_rollout_history)
    u = what.add_parser(
        "undo", help="go back to the previous revision (a new revision, rolled)",
        formatter_class=raw,
        epilog="examples:\n  mctl rollout undo workload web\n"
               "  mctl rollout undo workload web --to-revision 2")
    _target_args(u)
    u.add_argument("--to-revision", type=_revision, default=0, metavar="N",
                   help="the revision to go back to (default: the previous one)")
    u.set_defaults(fn=cmd_rollout_undo)
    rs = what.add_parser(
        "restart", help="replace every replica under the update strategy, spec unchanged",
        formatter_class=raw, epilog="examples:\n  mctl rollout restart workload web")
    _target_args(rs)
    rs.set_defaults(fn=cmd_rollout_restart)

    d = sub.add_parser(
        "diff", help="what an apply of a file would change, as a unified diff (nothing stored)",
        formatter_class=raw,
        epilog="exit status: 0 no differences, 1 differences, 2 an error\n"
               "examples:\n  mctl diff -f app.yaml\n  mctl diff -f app.yaml -n staging")
    d.add_argument("-f", "--filename", required=True, help="FILE, DIR or - for stdin")
    d.set_defaults(fn=cmd_diff)

"""`mctl config`: the clusters this CLI knows, as kubectl's `config` verbs show them.

A context is one cluster's server and credentials in the config file
(cli/config.py). `cluster up` adds one per cluster it starts;
`set-context NAME --server ADDR --tls-ca ... --tls-cert ... --tls-key ...`
adds one for a cluster started elsewhere (the multi-VM case), with the
global connection flags as its values; `use-context` picks the current one,
`--context NAME` (or MCTL_CONTEXT) another for one call.
"""

from __future__ import annotations

import argparse
import os

from mctl.common import names

from . import config
from .client import CliError, UsageError
from .tables import table


def _check(name: str) -> str:
    if problem := names.validate_dns_label(name):
        raise UsageError(f"context name: {problem}")
    return name


def _known(name: str, contexts: dict[str, dict[str, str]]) -> None:
    if name not in contexts:
        raise CliError(f"context {name} not found in {config.config_path()}"
                       f" (contexts: {', '.join(sorted(contexts)) or 'none'})")


def cmd_get_contexts(args: argparse.Namespace) -> int:
    current, contexts = config.load_all()
    if not contexts:
        print(f"No contexts in {config.config_path()} (mctl cluster up or mctl config"
              " set-context make one).")
        return 0
    rows = [["*" if name == current else "", name, s.get("server") or config.DEFAULT_SERVER,
             config.describe(s), s.get("cluster_dir") or "<none>"]
            for name, s in sorted(contexts.items())]
    print(table(["CURRENT", "NAME", "SERVER", "AUTH", "CLUSTER-DIR"], rows))
    return 0


def cmd_current_context(args: argparse.Namespace) -> int:
    current, contexts = config.load_all()
    if not current or current not in contexts:
        raise CliError(f"no current context in {config.config_path()}: mctl config"
                       " use-context NAME")
    print(current)
    return 0


def cmd_use_context(args: argparse.Namespace) -> int:
    name = _check(args.name)
    _, contexts = config.load_all()
    _known(name, contexts)
    config.write_all(name, contexts)
    print(f"Switched to context {name}.")
    return 0


def cmd_set_context(args: argparse.Namespace) -> int:
    """Creates or changes a context from the connection flags given with it."""
    name = _check(args.name)
    current, contexts = config.load_all()
    settings = dict(contexts.get(name, {}))
    given = {"server": args.server, "tls_ca": args.tls_ca, "tls_cert": args.tls_cert,
             "tls_key": args.tls_key}
    if not any(given.values()) and not args.insecure:
        raise UsageError("config set-context: give what the context holds: --server and"
                         " --tls-ca/--tls-cert/--tls-key, or --insecure")
    for key, value in given.items():
        if value:
            # Absolute: a path relative to where set-context ran means nothing later.
            settings[key] = value if key == "server" else os.path.abspath(value)
    if args.insecure:
        settings["insecure"] = "true"
        for key in config.TLS_KEYS:
            settings.pop(key, None)
    elif any(given[k] for k in config.TLS_KEYS):
        settings.pop("insecure", None)
    created = name not in contexts
    contexts[name] = settings
    try:
        config.write_all(current or name, contexts)
    except config.ConfigError as e:
        raise CliError(str(e)) from None
    print(f"Context {name} {'created' if created else 'modified'}.")
    return 0


def cmd_delete_context(args: argparse.Namespace) -> int:
    name = _check(args.name)
    current, contexts = config.load_all()
    _known(name, contexts)
    del contexts[name]
    config.write_all("" if current == name else current, contexts)
    print(f"Deleted context {name}" + (" (it was current: mctl config use-context NAME)."
                                       if current == name else "."))
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser("config", help="the clusters this CLI knows (contexts): get-contexts,"
                       " use-context, current-context, set-context, delete-context",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n"
                              "  mctl config get-contexts\n"
                              "  mctl config set-context prod --server 10.0.0.2:7070"
                              " --tls-ca ca.crt --tls-cert me.crt --tls-key me.key\n"
                              "  mctl config use-context prod\n"
                              "  mctl --context cluster get nodes")
    what = c.add_subparsers(dest="config_command", metavar="COMMAND")
    what.required = True
    g = what.add_parser("get-contexts", help="list the contexts; * marks the current one")
    g.set_defaults(fn=cmd_get_contexts)
    cur = what.add_parser("current-context", help="print the current context's name")
    cur.set_defaults(fn=cmd_current_context)
    u = what.add_parser("use-context", help="make NAME the current context")
    u.add_argument("name")
    u.set_defaults(fn=cmd_use_context)
    s = what.add_parser("set-context", help="create or change context NAME from --server,"
                        " --tls-ca, --tls-cert, --tls-key or --insecure")
    s.add_argument("name")
    s.set_defaults(fn=cmd_set_context)
    d = what.add_parser("delete-context", help="remove context NAME")
    d.add_argument("name")
    d.set_defaults(fn=cmd_delete_context)

"""Running Debian's `skopeo`, the registry client the agents and the scheduler share.

The distribution protocol (token auth, redirects, retries, manifest lists)
is skopeo's; this module only says how mctl calls it: credentials as an
auth.json by path (never on the command line, where /proc shows them),
extra CAs as a directory of `*.crt` files (added to the system's), TLS
checks off only for the registries named insecure, a small environment,
and its fatal message cut down to one line for users (`explain`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
from collections.abc import Iterable

MESSAGE_MAX = 300
_FATAL_MSG = re.compile(r'msg="((?:[^"\\]|\\.)*)"')


def explain(stderr: str, ref: str) -> str:
    """skopeo's fatal message as one line: its `msg="..."`, without the repeated reference."""
    found = _FATAL_MSG.findall(stderr)
    text = found[-1].encode().decode("unicode_escape", "replace") if found else ""
    if not text:
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
        text = lines[-1] if lines else "skopeo failed without saying why"
    text = text.removeprefix(f"initializing source docker://{ref}: ")
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_MAX else text[:MESSAGE_MAX - 3] + "..."


def access_args(prefix: str, auth_file: str, cert_dir: str, insecure: bool) -> list[str]:
    """skopeo's flags for one side of a command (`--src-` for copy, `--` for inspect)."""
    argv = [f"{prefix}cert-dir", cert_dir]
    argv += [f"{prefix}authfile", auth_file] if auth_file else [f"{prefix}no-creds"]
    if insecure:
        argv.append(f"{prefix}tls-verify=false")
    return argv


def write_cert_dir(directory: str, ca_files: Iterable[str]) -> None:
    """`directory` made anew holding a copy of each CA file as `ca-N.crt`."""
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory, mode=0o755)
    for i, path in enumerate(ca_files):
        shutil.copyfile(path, os.path.join(directory, f"ca-{i}.crt"))


def environment() -> dict[str, str]:
    """A small environment: no proxy or registry settings of whoever started us leak in."""
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
           "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    tmp = os.environ.get("TMPDIR")
    if tmp:
        env["TMPDIR"] = tmp
    return env


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The registry flags the agent and the scheduler both take."""
    g = parser.add_argument_group("image registries")
    g.add_argument("--registry-auth", default="", metavar="FILE",
                   help="credentials for registries: an auth.json as skopeo and podman write "
                        'it ({"auths": {"HOST[:PORT]": {"auth": base64(user:password)}}})')
    g.add_argument("--registry-ca", action="append", default=[], metavar="FILE",
                   help="a CA (PEM) trusted for registries besides the system's and the "
                        "cluster CA (repeatable)")
    g.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                   help="a registry reached without verifying TLS, or over plain HTTP "
                        "(repeatable; never the default)")


def checked_files(args: argparse.Namespace) -> tuple[str, tuple[str, ...]]:
    """(auth file, CA files: the cluster CA (--tls-ca) first), each checked readable.

    Raises ValueError naming the flag: a missing file is a start-up error, not a failed pull.
    """
    given = ([(args.registry_auth, "--registry-auth")] if args.registry_auth else []) + \
        [(ca, "--registry-ca") for ca in args.registry_ca]
    for path, flag in given:
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise ValueError(f"{flag}: {path}: not a readable file")
    cas = ([args.tls_ca] if getattr(args, "tls_ca", "") else []) + list(args.registry_ca)
    return (os.path.abspath(args.registry_auth) if args.registry_auth else "",
            tuple(os.path.abspath(c) for c in cas))

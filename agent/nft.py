"""nftables for the agent: running nft scripts, reading back its tables, change notifications.

Writing is `nft -f -`, one atomic transaction per script (hostports.py,
firewall.py). Reading is `nft --stateless list ruleset`, once per check:
stateless leaves out counters, so a table's text changes only when its
rules do, and the text the kernel shows right after a write is the
reference a later listing is compared with (drift: someone flushed or
edited it). The kernel multicasts every committed nftables transaction to
the NFNLGRP_NFTABLES group of NETLINK_NETFILTER (what `nft monitor` reads);
NftMonitor subscribes to it, so a change by hand is seen at once.
"""

from __future__ import annotations

import shutil
import socket
import subprocess

from mctl.common.netlink import NetlinkSocket

# linux/netlink.h, linux/netfilter/nfnetlink.h
NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7


class NftError(Exception):
    """nft is missing or refused a script; the message says which."""


def binary() -> str | None:
    return shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")


def _nft(argv: list[str], script: str | None, needed_for: str) -> str:
    nft = binary()
    if nft is None:
        raise NftError(f"{needed_for} needs the nft command (Debian package nftables)")
    proc = subprocess.run([nft, *argv], input=script, capture_output=True, text=True,
                          check=False, stdin=None if script is not None else subprocess.DEVNULL)
    if proc.returncode != 0:
        raise NftError(f"nft: {proc.stderr.strip() or f'exit status {proc.returncode}'}")
    return proc.stdout


def run(script: str, needed_for: str) -> None:
    """Applies `script` atomically (nft -f -)."""
    _nft(["-f", "-"], script, needed_for)


def tables() -> dict[str, str]:
    """Every table of this network namespace, stateless: "family name" -> its listing."""
    return split_tables(_nft(["--stateless", "list", "ruleset"], None, "reading nftables"))


def table(family: str, name: str) -> str:
    """The stateless listing of one table, "" if there is none."""
    return tables().get(f"{family} {name}", "")


def split_tables(listing: str) -> dict[str, str]:
    """The tables of a `list ruleset` text by "family name" (nft starts each at column 0)."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in listing.splitlines():
        if line.startswith("table "):
            words = line.split()
            current = out.setdefault(f"{words[1]} {words[2]}", [])
        if current is not None:
            current.append(line)
        if line == "}":
            current = None
    return {k: "\n".join(v) for k, v in out.items()}


class NftMonitor:
    """Wakes its reader when any nftables transaction commits in the socket's namespace.

    `sock` is a NETLINK_NETFILTER socket opened in the namespace to watch
    (default: the caller's). The messages themselves are not parsed: the
    reader lists the tables it owns and compares them (a notification is a
    hint). read() returns how many arrived, or None after an overrun.
    """

    def __init__(self, sock: socket.socket | None = None) -> None:
        if sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.nl = NetlinkSocket(NETLINK_NETFILTER, sock=sock, groups=1 << (NFNLGRP_NFTABLES - 1))

    def fileno(self) -> int:
        return self.nl.sock.fileno()

    def read(self) -> int | None:
        messages = self.nl.notifications()
        return None if messages is None else len(messages)

    def close(self) -> None:
        self.nl.close()

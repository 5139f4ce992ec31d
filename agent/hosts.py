"""A container's /etc/hosts: its own name and the replicas of its workload.

Containers of a workload find each other by replica name with no DNS
server and no extra daemon: the agent writes every replica's address into
the /etc/hosts of each container of the same workload and rewrites it when
replicas come and go. The file is bind-mounted into the container, so it is
rewritten in place (same inode): a rename would leave the container looking
at the old file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

HEADER = "# Managed by mctl: replicas of this workload and their addresses.\n"


def render(hostname: str, ip: str, peers: Iterable[tuple[str, str]] = (),
           replica: str = "") -> str:
    """The hosts file for replica `replica` with `hostname` at `ip` ("" = no network).

    `peers` are (replica name, address) pairs; the replica itself and
    entries without an address are skipped, the rest sorted by name.
    """
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             f"{ip or '127.0.1.1'}\t{hostname}"]
    others = sorted({(name, addr) for name, addr in peers
                     if addr and name not in (replica, hostname)})
    text = "\n".join(lines) + "\n"
    if others:
        text += HEADER + "".join(f"{addr}\t{name}\n" for name, addr in others)
    return text


def rewrite_in_place(path: str, text: str) -> bool:
    """Writes `text` into the existing file at `path` keeping its inode; False if unchanged."""
    data = text.encode()
    with open(path, "r+b") as f:
        if f.read() == data:
            return False
        f.seek(0)
        f.write(data)
        f.truncate()
    return True


def write_new(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)

"""What the tests that drive mctl-runtime through podman and containerd share.

`add_busybox_root` writes a busybox-static root (the directories a runtime
mounts on, busybox and its applets as links) into a tar being made;
`talk` runs a command on a pty of the test's own, as a user at a terminal
would: it waits for the shell's prompt, types, and returns what was printed.
`leftovers` is the modules' last check: what a test's runtime left of its
own (mounts under its temporary directory, cgroups under its cgroup parent,
processes naming the directory), after removing the parent's empty cgroups
and, where no mount is left in it, the directory.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import struct
import tarfile
import termios
import time

from mctl.agent.runtime.oci import client as ociclient
from mctl.common import procfs

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "sleep", "cat", "echo", "tty", "stty", "id", "readlink", "true", "date", "ps")


def add_busybox_root(tar: tarfile.TarFile) -> None:
    for d in ("bin", "proc", "sys", "dev", "etc", "tmp"):
        info = tarfile.TarInfo(d)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
    tar.add(BUSYBOX, "bin/busybox")
    for applet in APPLETS:
        info = tarfile.TarInfo(f"bin/{applet}")
        info.type, info.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(info)


def talk(argv: list[str], send: bytes, rows: int, cols: int) -> tuple[bytes, int]:
    """Runs argv on a pty of ours of the given size, types `send`, returns what it printed."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(argv[0], argv)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    out = b""
    sent = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 4096)
            except OSError:     # EIO: the command has exited and closed the terminal
                break
            if not data:
                break
            out += data
        if not sent and b"# " in out:      # the shell's prompt: it reads the terminal now
            os.write(fd, send)
            sent = True
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return out, os.waitstatus_to_exitcode(status)


def _mounts(needle: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if needle in line]


def leftovers(tmp: str, cgroup_parent: str) -> dict[str, list[str]]:
    """What is left under `tmp` and `cgroup_parent`, by kind; `tmp` is removed if no mount is."""
    ociclient.remove_empty_cgroups(cgroup_parent)
    leaks = {"mounts": _mounts(tmp),
             "cgroups": sorted(p for h in os.listdir("/sys/fs/cgroup")
                               if os.path.exists(p := f"/sys/fs/cgroup/{h}/{cgroup_parent}")),
             "processes": [f"{pid}: {cmd[:100]}"
                           for pid, cmd in procfs.processes_mentioning(tmp)]}
    if not leaks["mounts"]:
        shutil.rmtree(tmp, ignore_errors=True)
    return leaks

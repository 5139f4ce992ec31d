"""The image's `User`, turned into the uid, gid and groups a container process runs as.

Docker's forms: `user`, `user:group`, `uid`, `uid:gid`, `user:gid`,
`uid:group`, or empty (root). Names are looked up in the image's own
/etc/passwd and /etc/group (man 5 passwd, man 5 group), never the host's;
a user given alone gets its primary group from passwd (0 if a numeric uid
has no entry) and the groups that list it by name in /etc/group as
supplementary groups; `user:group` gets that group and no others.

The files are read from the image's layers on the host side, before the
overlay is mounted, the way overlayfs would show them: the topmost layer
that has the path wins, a whiteout (character device 0/0) or an opaque
directory on the way hides the layers below. Nothing is followed through a
symbolic link (the image's links point into the container's root, not the
host's), so an /etc/passwd that is a link is treated as absent.
"""

from __future__ import annotations

import os
import stat

_MAX_FILE = 1 << 20


class UserError(Exception):
    """The image's User cannot be resolved; the message is for the user."""


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(path: str) -> bool:
    from .unpack import OPAQUE_XATTR  # unpack.py (tarfile) is not in an idle agent
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def read_image_file(layers_top_first: list[str], rel: str) -> bytes | None:
    """The content of `rel` (e.g. "etc/passwd") as the overlay of the layers shows it."""
    parts = rel.strip("/").split("/")
    for layer in layers_top_first:
        path = layer
        stop_below = False
        for i, part in enumerate(parts):
            path = os.path.join(path, part)
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                break
            if _is_whiteout(st):
                return None
            last = i == len(parts) - 1
            if last:
                if not stat.S_ISREG(st.st_mode):
                    return None
                with open(path, "rb") as f:
                    return f.read(_MAX_FILE)
            if not stat.S_ISDIR(st.st_mode):
                return None        # a file or link where a directory should be
            if _opaque(path):
                stop_below = True  # lower layers' copies of this dir are hidden
        if stop_below:
            return None
    return None


def _entries(data: bytes | None) -> list[list[str]]:
    if data is None:
        return []
    text = data.decode("utf-8", "replace")
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def resolve(spec: str, layers_top_first: list[str]) -> tuple[int, int, tuple[int, ...]]:
    """(uid, gid, supplementary gids) for the image User `spec`."""
    if not spec:
        return 0, 0, ()
    user, _, group = spec.partition(":")
    passwd = [e for e in _entries(read_image_file(layers_top_first, "etc/passwd"))
              if len(e) >= 4]
    groups = [e for e in _entries(read_image_file(layers_top_first, "etc/group")) if len(e) >= 3]
    uid = _number(user)
    name = user
    gid: int | None = None
    if uid is None:
        found = next((e for e in passwd if e[0] == user), None)
        if found is None or _number(found[2]) is None:
            raise UserError(f"image user {user!r} is not in the image's /etc/passwd")
        uid = int(found[2])
        gid = _number(found[3])
    else:
        found = next((e for e in passwd if e[2] == user), None)
        if found is not None:
            name = found[0]
            gid = _number(found[3])
    if group:
        gid = _number(group)
        if gid is None:
            entry = next((e for e in groups if e[0] == group), None)
            if entry is None or _number(entry[2]) is None:
                raise UserError(f"image group {group!r} is not in the image's /etc/group")
            gid = int(entry[2])
        # An explicit group is all the user asked for: no supplementary groups.
        return uid, gid, ()
    extra = sorted({int(e[2]) for e in groups
                    if _number(e[2]) is not None and len(e) >= 4 and name in e[3].split(",")})
    gid = gid or 0
    return uid, gid, tuple(g for g in extra if g != gid)

"""Unpacking one image layer (a tar stream) into a directory an overlay can stack.

An image layer is a tar of the files it adds or changes, plus *whiteouts*
for what it deletes from the layers below it (OCI image spec, "Layer
Filesystem Changeset"; the AUFS convention Docker kept):

- `DIR/.wh.NAME` deletes DIR/NAME. Overlayfs spells that as a character
  device 0/0 named NAME (man 2 mknod; Documentation/filesystems/overlayfs.rst,
  "whiteouts and opaque directories").
- `DIR/.wh..wh..opq` makes DIR *opaque*: nothing of the lower layers' DIR
  shows, only this layer's. Overlayfs spells that as the extended attribute
  `trusted.overlay.opaque=y` on DIR (man 7 xattr).
- A whiteout removes only what lower layers had: an entry of the same layer
  with the same name wins over it, and a directory that both exists in this
  layer and is whited out becomes opaque (the lower one's contents go, this
  layer's stay).

Other `.wh..wh.*` names are AUFS bookkeeping and are skipped.

The tar is hostile until proven otherwise. Refused, naming the member:
absolute names and `..` components, symbolic links whose target (read from
the link's directory, an absolute one from the layer root) climbs above the
layer root, hard links to anything but a file or link already unpacked from
this layer, paths through a symbolic link (a later `a/x` after `a -> /etc`
would otherwise write into the host's /etc), members over the per-file size
cap, more members or bytes than the budget allows, and unknown member types.
Device nodes are skipped with a warning, never created: a container gets a
fresh /dev from the runtime, and a node elsewhere in an image would be a way
around the node's device policy. Extended attributes in the tar (PAX
`SCHILY.xattr.*`, e.g. file capabilities) are not restored: containers run
with no_new_privs, under which file capabilities grant nothing anyway.

Ownership (numeric uid/gid), permission bits (with setuid/setgid/sticky),
modification times, symbolic links, hard links and FIFOs are kept. Nothing
here follows a symbolic link: every path is checked component by component
with lstat, files are opened with O_NOFOLLOW and metadata set with
follow_symlinks=False.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from .layerstream import Forward

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_COPY_CHUNK = 1 << 20
# Real images nest a few dozen levels at most.
MAX_DEPTH = 200


class LayerError(Exception):
    """The layer is malformed or hostile; `member` names the tar member at fault."""

    def __init__(self, member: str, problem: str) -> None:
        super().__init__(f"member {member!r}: {problem}" if member else problem)
        self.member = member
        self.problem = problem


@dataclass
class Budget:
    """What one import may still unpack, shared by all the layers of an archive.

    Layers may be unpacked by several threads at once (archive.py): the
    count is taken under a lock, so the limit holds for their sum.
    """

    max_file_bytes: int
    max_members: int
    members: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def take_member(self, name: str) -> None:
        with self._lock:
            self.members += 1
            over = self.members > self.max_members
        if over:
            raise LayerError(name, f"more than {self.max_members} members in the archive's "
                                   "layers (the node's limit)")


@dataclass
class Unpacked:
    """What a layer held: bytes of file content, entries, and what was skipped."""

    size: int = 0
    entries: int = 0
    skipped: list[str] = field(default_factory=list)


def member_path(name: str) -> str:
    """A member's path relative to the layer root ("" is the root itself).

    `./a//b/` -> `a/b`. Absolute names and `..` are refused rather than
    cleaned up: an archive that has them was not made by an image builder.
    So are paths deeper than MAX_DEPTH: removing such a tree again would
    overflow Python's recursion in shutil.rmtree.
    """
    if name.startswith("/"):
        raise LayerError(name, "absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayerError(name, "path climbs out of the layer with '..'")
    if len(parts) > MAX_DEPTH:
        raise LayerError(name[:200], f"more than {MAX_DEPTH} directories deep")
    return "/".join(parts)


def link_escapes(link: str, target: str) -> bool:
    """Whether symlink `link` (a member path) pointing at `target` climbs above the root.

    Read lexically, as the container would resolve it in its own root: an
    absolute target starts at the layer root, a relative one at the link's
    directory; a `..` at the root escapes.
    """
    parts = [] if target.startswith("/") else link.split("/")[:-1]
    for p in target.split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            if not parts:
                return True
            parts.pop()
        else:
            parts.append(p)
    return False


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


class _Unpacker:
    def __init__(self, root: str, budget: Budget) -> None:
        self.root = root
        self.budget = budget
        self.result = Unpacked()
        # Directories known to be real directories (not links), to spare lstat
        # calls; cleared whenever an entry replaces a directory.
        self.dirs: set[str] = {""}
        # Directory metadata is set last: adding entries changes a dir's mtime,
        # and a read-only dir mode must not come before its contents.
        self.dir_meta: dict[str, tarfile.TarInfo] = {}

    def abs(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    # -- paths -----------------------------------------------------------------------

    def parent_dirs(self, name: str, rel: str, create: bool) -> None:
        """Makes sure every parent of `rel` is a real directory of this layer."""
        parts = rel.split("/")[:-1]
        for i in range(len(parts)):
            d = "/".join(parts[: i + 1])
            if d in self.dirs:
                continue
            st = _lstat(self.abs(d))
            if st is None or _is_whiteout(st):
                if not create:
                    raise LayerError(name, f"{d!r} is not in this layer")
                if st is not None:
                    # `.wh.d` then `d/x`: d is new in this layer and hides the lower d.
                    os.unlink(self.abs(d))
                    os.mkdir(self.abs(d), 0o755)
                    self.set_opaque(d)
                else:
                    os.mkdir(self.abs(d), 0o755)
            elif stat.S_ISLNK(st.st_mode):
                raise LayerError(name, f"path goes through the symbolic link {d!r}")
            elif not stat.S_ISDIR(st.st_mode):
                raise LayerError(name, f"{d!r} is not a directory")
            self.dirs.add(d)

    def clear(self, rel: str) -> os.stat_result | None:
        """Removes what is at `rel` (a duplicate member); returns what was there."""
        st = _lstat(self.abs(rel))
        if st is None:
            return None
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(self.abs(rel))
            self.dirs = {""}
            self.dir_meta = {k: v for k, v in self.dir_meta.items()
                             if k != rel and not k.startswith(rel + "/")}
        else:
            os.unlink(self.abs(rel))
        return st

    def set_opaque(self, rel: str) -> None:
        os.setxattr(self.abs(rel), OPAQUE_XATTR, b"y", follow_symlinks=False)

    # -- members ------------------------------------------------------------------

    def member(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        name = m.name
        self.budget.take_member(name)
        rel = member_path(name)
        base = rel.rsplit("/", 1)[-1]
        if base.startswith(WHITEOUT_PREFIX):
            self.whiteout(name, rel, base)
            return
        if rel == "":
            if m.isdir():
                self.dir_meta[""] = m
                return
            raise LayerError(name, "the layer root must be a directory")
        self.parent_dirs(name, rel, create=True)
        if m.isdir():
            self.directory(rel, m)
        elif m.isreg():
            self.regular(tf, name, rel, m)
        elif m.issym():
            self.symlink(name, rel, m)
        elif m.islnk():
            self.hardlink(name, rel, m)
        elif m.ischr() or m.isblk():
            kind = "character" if m.ischr() else "block"
            self.result.skipped.append(f"{name} ({kind} device {m.devmajor}:{m.devminor})")
            log.warning("layer member %r is a %s device node: skipped", name, kind)
            return
        elif m.isfifo():
            self.clear(rel)
            os.mkfifo(self.abs(rel), 0o600)
            self.metadata(rel, m)
        else:
            raise LayerError(name, f"unsupported tar member type {m.type!r}")
        self.result.entries += 1

    def whiteout(self, name: str, rel: str, base: str) -> None:
        parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
        if base == OPAQUE_MARKER:
            self.parent_dirs(name, rel, create=True)
            self.set_opaque(parent)
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            log.debug("layer member %r is AUFS metadata: skipped", name)
            return
        target = base[len(WHITEOUT_PREFIX):]
        if target in ("", ".", ".."):
            raise LayerError(name, "whiteout of no name")
        hidden = f"{parent}/{target}" if parent else target
        self.parent_dirs(name, hidden, create=True)
        st = _lstat(self.abs(hidden))
        if st is None:
            os.mknod(self.abs(hidden), stat.S_IFCHR | 0o000, os.makedev(0, 0))
        elif stat.S_ISDIR(st.st_mode):
            # The dir is also in this layer: keep its entries, hide the lower ones.
            self.set_opaque(hidden)
        # Any other entry of this layer hides the lower one by itself.

    def directory(self, rel: str, m: tarfile.TarInfo) -> None:
        st = _lstat(self.abs(rel))
        if st is not None and stat.S_ISDIR(st.st_mode):
            self.dir_meta[rel] = m
            return
        was = self.clear(rel)
        os.mkdir(self.abs(rel), 0o755)
        if was is not None and _is_whiteout(was):
            self.set_opaque(rel)
        self.dirs.add(rel)
        self.dir_meta[rel] = m

    def regular(self, tf: tarfile.TarFile, name: str, rel: str, m: tarfile.TarInfo) -> None:
        if m.size > self.budget.max_file_bytes:
            raise LayerError(name, f"{m.size} bytes is over the node's limit of "
                                   f"{self.budget.max_file_bytes} bytes per file")
        self.clear(rel)
        read: Callable[[int], bytes]
        if m.sparse is None and isinstance(tf.fileobj, Forward):
            # The contents as the decompressor made them (tarfile's own file
            # object would copy each chunk twice more); tarfile skips to the
            # next header from wherever this stops.
            stream = tf.fileobj
            stream.seek(m.offset_data)
            read = stream.read_some
        else:
            src = tf.extractfile(m)
            if src is None:
                raise LayerError(name, "no data for a regular file")
            read = src.read
        fd = os.open(self.abs(rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600)
        try:
            left = m.size
            while left > 0:
                chunk = read(min(left, _COPY_CHUNK))
                if not chunk:
                    raise LayerError(name, "the tar stream ends inside this file")
                left -= len(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        self.result.size += m.size
        self.metadata(rel, m)

    def symlink(self, name: str, rel: str, m: tarfile.TarInfo) -> None:
        if not m.linkname:
            raise LayerError(name, "symbolic link with an empty target")
        if link_escapes(rel, m.linkname):
            raise LayerError(name, f"symbolic link target {m.linkname!r} leaves the layer root")
        self.clear(rel)
        os.symlink(m.linkname, self.abs(rel))
        self.metadata(rel, m)

    def hardlink(self, name: str, rel: str, m: tarfile.TarInfo) -> None:
        try:
            target = member_path(m.linkname)
        except LayerError as e:
            raise LayerError(name, f"hard link target {m.linkname!r}: {e.problem}") from None
        if target in ("", rel):
            raise LayerError(name, f"hard link to {m.linkname!r}")
        # The target's parents must be real directories too, or the link
        # could reach through a symlink to a file of the host.
        self.parent_dirs(name, target, create=False)
        st = _lstat(self.abs(target))
        if st is None:
            raise LayerError(name, f"hard link target {m.linkname!r} is not in this layer")
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)
                or stat.S_ISFIFO(st.st_mode)):
            raise LayerError(name, f"hard link target {m.linkname!r} is not a file")
        self.clear(rel)
        os.link(self.abs(target), self.abs(rel), follow_symlinks=False)

    def metadata(self, rel: str, m: tarfile.TarInfo) -> None:
        path = self.abs(rel)
        # chown first: it clears setuid/setgid bits that chmod then sets.
        os.chown(path, m.uid, m.gid, follow_symlinks=False)
        if not m.issym():
            os.chmod(path, stat.S_IMODE(m.mode))
        os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)

    def finish(self) -> None:
        # Deepest first, so setting a parent's mtime comes after its children's.
        for rel in sorted(self.dir_meta, key=lambda r: r.count("/") + bool(r), reverse=True):
            st = _lstat(self.abs(rel))
            if st is not None and stat.S_ISDIR(st.st_mode):
                self.metadata(rel, self.dir_meta[rel])


def unpack(stream: BinaryIO, root: str, budget: Budget) -> Unpacked:
    """Unpacks the uncompressed tar `stream` into the existing, empty directory `root`.

    Raises LayerError for a malformed or hostile layer; `root` then holds
    whatever was unpacked so far and must be thrown away by the caller.
    """
    unpacker = _Unpacker(root, budget)
    try:
        # Seeking mode over a forward-only stream: tarfile reads headers and
        # skips padding through it, never going back (layerstream.py).
        tf = tarfile.open(fileobj=Forward(stream), mode="r:")  # type: ignore[call-overload]
    except tarfile.TarError as e:
        raise LayerError("", f"not a tar stream: {e}") from None
    with tf:
        while True:
            try:
                m = tf.next()
            except tarfile.TarError as e:
                raise LayerError("", f"bad tar header: {e}") from None
            if m is None:
                break
            try:
                unpacker.member(tf, m)
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    raise
                raise LayerError(m.name, f"cannot unpack: {e.strerror or e}") from None
            except tarfile.TarError as e:
                raise LayerError(m.name, f"bad tar data: {e}") from None
            # tarfile keeps every member it has read, in a list it has no
            # method to drop; a layer of a million files would keep them all
            # in memory for nothing.
            tf.members.clear()
        unpacker.finish()
    return unpacker.result

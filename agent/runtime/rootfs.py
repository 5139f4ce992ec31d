"""The container's root filesystem, made inside its mount namespace, then pivot_root.

The bundle's rootfs directory is ready when the runtime starts (the agent's
bundle/overlay.py stacks the image layers there). In the container's new
mount namespace (child side, between fork and exec): `prepare` makes every
mount private so nothing propagates back to the host (man 7
mount_namespaces), mounts /proc, /dev, /sys and the bind mounts of
config.json inside the rootfs, hides masked paths, then `pivot` switches the
root with pivot_root(2) and detaches the old one, so the host's tree is no
longer reachable.

Device nodes: the rootfs and /dev are `nodev` mounts, so a node the
container makes with mknod(2) (CAP_MKNOD is in Docker's default set) cannot
be opened, whatever device it names; the few /dev needs (null, zero, full,
random, urandom, tty) are bind mounts of the host's nodes, which keep
their own mount's flags. That is what runc does in a user namespace, where
mknod of a device is refused anyway, and it needs no device cgroup (v1) or
eBPF device program (v2). config.json's `linux.devices` are bound the same
way from the host's nodes (make_config_devices).

Propagation: the namespace is private (a slave for rootfsPropagation
slave/rslave) while the mounts are made, mount options such as `rshared`
get a mount(2) call of their own, and linux.rootfsPropagation is applied to
the root after pivot_root. Without a mount namespace of the container's own
(none, or one joined by path) nothing here runs but enter_by_chroot.

The child side must not log or allocate much: it runs in a forked process.
"""

from __future__ import annotations

import errno
import os

from . import syscalls as sc
from .oci.config import Config, Mount

# Mount options that are flags; everything else is passed as data.
_FLAG_OPTIONS = {
    "ro": sc.MS_RDONLY, "nosuid": sc.MS_NOSUID, "nodev": sc.MS_NODEV,
    "noexec": sc.MS_NOEXEC, "noatime": sc.MS_NOATIME, "strictatime": sc.MS_STRICTATIME,
    "relatime": sc.MS_RELATIME, "nodiratime": sc.MS_NODIRATIME,
    "bind": sc.MS_BIND, "rbind": sc.MS_BIND | sc.MS_REC,
}
# Propagation options are no mount flags of the mount itself: mount(2) takes
# them only in a call of their own on the mount point (man 2 mount, "Changing
# the propagation type"), made right after the mount (propagation_flags).
PROPAGATION = {
    "shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE, "rslave": sc.MS_SLAVE | sc.MS_REC,
    "private": sc.MS_PRIVATE, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE, "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}
# "dev", "exec" and "suid" are what a fresh mount gets anyway (podman's
# config.json spells them out).
_IGNORED_OPTIONS = {"rw", "dev", "exec", "suid", *PROPAGATION}
# The v1 hierarchies in which every container has a cgroup of its own (cgroups/v1.py).
_OWN_V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids")

# The device nodes every container gets, as runc's default devices (c 1:3,
# 1:5, 1:7, 1:8, 1:9, 5:0): bound from the host's /dev into a fresh tmpfs.
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_DEV_LINKS = {
    "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx", "core": "/proc/kcore",
}


def split_options(options: tuple[str, ...]) -> tuple[int, str]:
    flags = 0
    data = []
    for opt in options:
        flag = _FLAG_OPTIONS.get(opt)
        if flag is not None:
            flags |= flag
        elif opt not in _IGNORED_OPTIONS:
            data.append(opt)
    return flags, ",".join(data)


def propagation_flags(options: tuple[str, ...]) -> int:
    """The propagation the options ask for (the last one given wins, as in runc); 0: none."""
    flags = 0
    for opt in options:
        flags = PROPAGATION.get(opt, flags)
    return flags


def _inside(rootfs: str, dest: str) -> str:
    """`dest` resolved inside `rootfs`, following its symlinks as the container would.

    Mounts are made before pivot_root, on the host's tree: a symlink in the
    image, or one a container left in its upper dir before a restart
    (`/etc -> /`), must not send /etc/hostname's bind mount or the file made
    for it to a host path (runc's CVE-2021-30465 class). Every component is
    resolved against `rootfs` as the root, `..` stops at it, and absolute
    link targets restart from it.
    """
    return secure_join(rootfs, dest)


MAX_SYMLINKS = 40      # as the kernel's path walk (ELOOP)


def secure_join(root: str, unsafe: str) -> str:
    """`root`/`unsafe` with symlinks resolved as if `root` were `/`; never outside `root`."""
    parts = [p for p in unsafe.split("/") if p not in ("", ".")]
    done: list[str] = []         # resolved components below root
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = os.path.join(root, *done, part)
        try:
            is_link = os.path.islink(candidate)
        except OSError:
            is_link = False
        if not is_link:
            done.append(part)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise OSError(f"too many symlinks resolving {unsafe!r} in {root}")
        target = os.readlink(candidate)
        if target.startswith("/"):
            done = []
        parts = [p for p in target.split("/") if p not in ("", ".")] + parts
    return os.path.join(root, *done)


def _host_cgroup_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[tuple[str, str, str]]:
    """(mount point, fs type, controller options) of each cgroup fs under /sys/fs/cgroup."""
    with open(mountinfo) as f:
        lines = f.read().splitlines()
    found = []
    for line in lines:
        head, _, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if len(fields) < 5 or len(rest) < 3 or rest[0] not in ("cgroup", "cgroup2"):
            continue
        if fields[4] == "/sys/fs/cgroup" or os.path.dirname(fields[4]) == "/sys/fs/cgroup":
            options = ",".join(o for o in rest[2].split(",") if o not in ("rw", "ro"))
            found.append((fields[4], rest[0], options))
    return found


def _mount_cgroup(sys: sc.Syscalls, target: str, flags: int, config: Config) -> None:
    """A `cgroup` mount: the container's own cgroups, seen from its cgroup namespace.

    As runc does with a cgroup namespace: cgroup2 itself on a unified host;
    on v1 a tmpfs holding one mount per hierarchy. Only the hierarchies in
    which the container has a cgroup of its own are mounted (and the
    cgroup2 one), so the namespace's root is the container's cgroup there.

    Without a cgroup namespace (`runc spec`'s config.json), as runc and crun
    do then: each hierarchy is a read-only bind mount of the container's own
    cgroup directory in the host's (found in /proc/self/cgroup, which the
    init has joined by now), so the container sees its files and limits and
    none of the host's, and cannot change them.
    """
    hierarchies = _host_cgroup_mounts()
    own_ns = "cgroup" in config.namespaces
    paths = {} if own_ns else _own_cgroup_paths()
    if any(point == "/sys/fs/cgroup" and kind == "cgroup2" for point, kind, _ in hierarchies):
        if own_ns:
            sys.mount("cgroup2", target, "cgroup2", flags)
        else:
            _bind_cgroup(sys, "/sys/fs/cgroup" + paths.get("", "/"), target, flags)
        return
    sys.mount("tmpfs", target, "tmpfs", flags & ~sc.MS_RDONLY, "mode=755")
    own_path = paths.get(_hierarchy_key("memory", paths) or "", "")
    for point, kind, options in hierarchies:
        if kind == "cgroup" and not set(options.split(",")) & set(_OWN_V1_CONTROLLERS):
            # cpuset, devices, freezer, blkio: shown without a cgroup namespace
            # where the init is in the container's own cgroup, as mctl-runtime's
            # are (cgroups/container_setup.py); the agent's containers are not.
            key = None if own_ns else _hierarchy_key(options, paths)
            if key is None or not own_path or paths[key] != own_path:
                continue
        sub = os.path.join(target, os.path.basename(point))
        os.makedirs(sub, exist_ok=True)
        if own_ns:
            sys.mount("cgroup", sub, kind, flags, options)
            continue
        key = "" if kind == "cgroup2" else _hierarchy_key(options, paths)
        if key is None:
            continue  # a hierarchy this process is not in (none on a sane host)
        _bind_cgroup(sys, point + paths[key], sub, flags)
    if flags & sc.MS_RDONLY:
        sys.mount("tmpfs", target, "tmpfs", flags | sc.MS_REMOUNT, "mode=755")


def _own_cgroup_paths(path: str = "/proc/self/cgroup") -> dict[str, str]:
    """controllers ("cpu,cpuacct"; "" for cgroup2) -> this process's cgroup path there."""
    out = {}
    with open(path) as f:
        for line in f.read().splitlines():
            _, controllers, cgroup = line.split(":", 2)
            out[controllers] = cgroup
    return out


def _hierarchy_key(options: str, paths: dict[str, str]) -> str | None:
    """The /proc/self/cgroup key of the v1 hierarchy mounted with `options`."""
    mounted = set(options.split(","))
    for controllers in paths:
        if controllers and set(controllers.split(",")) <= mounted:
            return controllers
    return None


def _bind_cgroup(sys: sc.Syscalls, source: str, target: str, flags: int) -> None:
    # Read-only unless config.json says otherwise (runc: "ro" is in runc
    # spec's options); a bind mount takes MS_RDONLY only on a remount.
    keep = flags & (sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_RDONLY)
    sys.mount(source, target, "", sc.MS_BIND)
    sys.mount("", target, "", sc.MS_BIND | sc.MS_REMOUNT | keep)


def _mount_one(sys: sc.Syscalls, rootfs: str, m: Mount, config: Config,
               extra_flags: int = 0) -> None:
    target = _mount_plain(sys, rootfs, m, config, extra_flags)
    propagation = propagation_flags(m.options)
    if propagation:
        sys.mount("", target, "", propagation)


def _mount_plain(sys: sc.Syscalls, rootfs: str, m: Mount, config: Config,
                 extra_flags: int) -> str:
    """The mount itself; returns where it was made."""
    target = _inside(rootfs, m.destination)
    flags, data = split_options(m.options)
    flags |= extra_flags
    if config.mount_label and not flags & sc.MS_BIND:
        from . import lsm  # SELinux's context= option (lsm.py)

        data = lsm.mount_data(m.type, data, config.mount_label)
    if m.type == "cgroup":
        os.makedirs(target, exist_ok=True)
        _mount_cgroup(sys, target, flags, config)
        return target
    if m.type == "bind" or flags & sc.MS_BIND:
        if os.path.isdir(m.source):
            os.makedirs(target, exist_ok=True)
        elif not os.path.exists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "a").close()
        sys.mount(m.source, target, "", flags | sc.MS_BIND)
        if flags & sc.MS_RDONLY:
            # A bind mount ignores MS_RDONLY until it is remounted (man 2 mount).
            sys.mount("", target, "", flags | sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY)
        return target
    os.makedirs(target, exist_ok=True)
    sys.mount(m.source, target, m.type, flags, data)
    return target


def _make_devices(sys: sc.Syscalls, rootfs: str) -> None:
    dev = os.path.join(rootfs, "dev")
    for name in _DEVICES:
        target = os.path.join(dev, name)
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666))
        sys.mount(f"/dev/{name}", target, "", sc.MS_BIND)
    for name, target in _DEV_LINKS.items():
        os.symlink(target, os.path.join(dev, name))


def make_config_devices(sys: sc.Syscalls, rootfs: str, config: Config) -> None:
    """linux.devices in the container's /dev tmpfs (nodev, see the module docstring).

    A fifo ("p") is made with mkfifo, with fileMode, uid and gid. A device
    node is the host's own, bind-mounted, as runc does in a user namespace:
    made with mknod it could not be opened on the nodev tmpfs, and a /dev
    without nodev would let the container open any node it makes (there is
    no device cgroup here). So the host must have a node of that type and
    number at the same path; its mode and owner are the host's.
    """
    import stat

    dev = os.path.join(rootfs, "dev")
    for i, d in enumerate(config.devices):
        where = f"linux.devices[{i}] ({d.path})"
        name = d.path[len("/dev/"):]
        if name in _DEVICES:
            continue  # made above, from the same host node
        target = secure_join(dev, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if d.type == "p":
            os.mkfifo(target, 0o666 if d.file_mode is None else d.file_mode)
            if d.file_mode is not None:
                os.chmod(target, d.file_mode)   # mkfifo is subject to the umask
            if d.uid is not None or d.gid is not None:
                os.chown(target, -1 if d.uid is None else d.uid,
                         -1 if d.gid is None else d.gid)
            continue
        try:
            st = os.stat(d.path)
        except OSError as e:
            raise OSError(f"{where}: no such node on the host ({e.strerror}); mctl-runtime "
                          "binds the host's device nodes") from None
        kind_ok = stat.S_ISBLK(st.st_mode) if d.type == "b" else stat.S_ISCHR(st.st_mode)
        if not kind_ok or (os.major(st.st_rdev), os.minor(st.st_rdev)) != (d.major, d.minor):
            raise OSError(f"{where}: the host's {d.path} is not {d.type} {d.major}:{d.minor}; "
                          "mctl-runtime binds the host's device nodes")
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        sys.mount(d.path, target, "", sc.MS_BIND)


def _covered(dest: str, earlier: list[str]) -> bool:
    return any(dest.startswith(d.rstrip("/") + "/") for d in earlier)


def make_mount_points(rootfs: str, config: Config) -> None:
    """Host side of a user namespace: makes the mount points that are missing.

    The image's directories belong to the host's root, which the container's
    root is not; so mount points in them (/etc/hostname in an image without
    one) are made beforehand. Those inside another mount (/dev/pts in the
    /dev tmpfs) are made later, inside, where the container owns them.
    """
    earlier: list[str] = []
    for m in config.mounts:
        if not _covered(m.destination, earlier):
            target = _inside(rootfs, m.destination)
            is_bind = m.type == "bind" or "bind" in m.options or "rbind" in m.options
            if is_bind and not os.path.isdir(m.source):
                if not os.path.lexists(target):
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    open(target, "a").close()
            else:
                os.makedirs(target, exist_ok=True)
        earlier.append(m.destination)


def premount_sysfs(sys: sc.Syscalls, rootfs: str, config: Config) -> tuple[str, ...]:
    """Host side of a user namespace: mounts config.json's sysfs mounts now.

    Called in a private mount namespace of the host's, before the user
    namespace exists (userns.needs_host_sysfs says when); the container's
    mount namespace is a copy of it, in which the kernel locks these mounts
    as they are (read-only stays read-only). Returns their destinations.
    """
    sys.mount("", "/", "", sc.MS_REC | sc.MS_PRIVATE)
    done = []
    for m in config.mounts:
        if m.type == "sysfs":
            _mount_one(sys, rootfs, m, config)
            done.append(m.destination)
    return tuple(done)


def prepare(sys: sc.Syscalls, rootfs: str, config: Config,
            premounted: tuple[str, ...] = ()) -> None:
    """Child side: every mount of config.json, inside `rootfs`, in a private namespace.

    `premounted`: destinations already mounted (premount_sysfs).
    """
    # Private, so nothing made here reaches the caller's namespace; a slave
    # when linux.rootfsPropagation asks for one (the host's mounts still
    # arrive, as with runc's default rslave; none go back). Shared and
    # unbindable are applied after pivot_root (pivot), as runc does: a
    # shared root now would send these mounts to the host.
    slave = config.rootfs_propagation in ("slave", "rslave")
    sys.mount("", "/", "", sc.MS_REC | (sc.MS_SLAVE if slave else sc.MS_PRIVATE))
    # pivot_root needs the new root to be a mount point; a bind onto itself
    # makes it one even when the bundle's rootfs is a plain directory (and
    # in a user namespace, one the kernel has not locked). Then nodev: no
    # device node made in the rootfs can be opened.
    sys.mount(rootfs, rootfs, "", sc.MS_BIND | sc.MS_REC)
    sys.mount("", rootfs, "", sc.MS_BIND | sc.MS_REMOUNT | sc.MS_NODEV)
    made_dev = False
    for m in config.mounts:
        if m.destination in premounted:
            continue
        is_dev = m.destination == "/dev" and m.type == "tmpfs"
        _mount_one(sys, rootfs, m, config, sc.MS_NODEV if is_dev else 0)
        if is_dev:
            _make_devices(sys, rootfs)
            if config.devices:
                make_config_devices(sys, rootfs, config)
            made_dev = True
    if not made_dev:
        raise OSError(errno.EINVAL, "config.json mounts no tmpfs at /dev")


def mask_paths(sys: sc.Syscalls, config: Config) -> None:
    """Child side, after pivot: hide masked paths, make read-only paths read-only."""
    for path in config.masked_paths:
        if not os.path.lexists(path):
            continue  # this kernel has no such file: nothing to hide
        if os.path.isdir(path):
            sys.mount("tmpfs", path, "tmpfs", sc.MS_RDONLY)
        else:
            sys.mount("/dev/null", path, "", sc.MS_BIND)
    for path in config.readonly_paths:
        if not os.path.lexists(path):
            continue
        sys.mount(path, path, "", sc.MS_BIND | sc.MS_REC)
        sys.mount(path, path, "", sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT | sc.MS_RDONLY
                  | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)


def pivot(sys: sc.Syscalls, rootfs: str, readonly: bool, propagation: str = "") -> None:
    """Child side: make `rootfs` the root and detach the host's tree.

    pivot_root(".", ".") stacks the old root on top of the new one, so it can
    be unmounted without a put_old directory inside the image (as runc does).
    `propagation` (linux.rootfsPropagation) is applied to the new root last:
    the root is by now a mount of the container's namespace alone, so
    "shared" makes a peer group of its own, never the host's.
    """
    os.chdir(rootfs)
    sys.pivot_root(".", ".")
    sys.umount(".", sc.MNT_DETACH)
    os.chdir("/")
    if readonly:
        # A remount sets every flag anew: keep nodev (prepare).
        sys.mount("", "/", "", sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_REC
                  | sc.MS_NODEV)
    if propagation:
        sys.mount("", "/", "", PROPAGATION[propagation])


def enter_by_chroot(sys: sc.Syscalls, rootfs: str) -> None:
    """Child side without a mount namespace: chroot(2) into `rootfs`, mounting nothing.

    The mount namespace is the caller's, so pivot_root would move the root
    of every process in it and a mount would outlive the container; runc
    chroots here as well. A chroot can be left by a process holding
    CAP_SYS_CHROOT, which is why containers normally get a mount namespace.
    """
    sys.chroot(rootfs)
    os.chdir("/")


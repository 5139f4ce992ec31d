"""A replica's volumes on this node: emptyDir, named volumes, hostPath, configs and secrets.

Every volume a container mounts becomes one bind mount in its config.json
(after the rootfs and the default mounts), whose source the agent prepares
before the container starts:

    <bundle>/scratch/<volume>   a disk emptyDir: a plain directory, counted in
                                the container's disk use (diskusage.py); its
                                sizeLimit is held by the same walk (disklimit.py)
    <bundle>/volumes/<volume>   a Memory emptyDir (a tmpfs of sizeLimit), a
                                config (one file per key) or a hostPath (a bind
                                of the directory resolved beneath its allowed
                                prefix: what the runtime mounts is what was checked)
    <bundle>/secrets/           one tmpfs per replica holding its secret volumes,
                                one file per key, 0400, owned by the container's
                                user, and its config.json (which carries env
                                values from secrets; the bundle's is a symlink)
    <state>/volumes/<ns>/<name> a named volume: made by the first replica that
                                mounts it here, kept across restarts, updates,
                                agent restarts and the workload's deletion

Everything under the bundle lives as long as the replica: container restarts
keep it, teardown (and a fresh start after a DiskLimit stop, which the
kubelet would answer by evicting the pod) removes it. Named volumes are
never removed by the agent.

Why disk emptyDirs are measured, not capped: as disklimit.py says, the state
dir's file system cannot be assumed to have project quotas, and a loop
device per volume costs mkfs on every start. At the limit the writer is
stopped within one check period (reason DiskLimit naming the volume), not
refused with ENOSPC; a Memory emptyDir is a tmpfs, whose writer gets ENOSPC.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mctl.common.quantity import format_bytes_short
from mctl.v1 import types_pb2

from .bundle import overlay
from .diskusage import tree_bytes
from .runtime import syscalls as sc
from .runtime.oci import config as oci

log = logging.getLogger(__name__)

SCRATCH_DIR = "scratch"
VOLUMES_DIR = "volumes"
SECRETS_DIR = "secrets"
CONFIG_FILE = "config.json"
# A Memory emptyDir without sizeLimit: the workload's memory limit if it has
# one (its pages are charged to the container's cgroup anyway), else this,
# so that no tmpfs defaults to half the node's memory as tmpfs itself would.
MEMORY_DEFAULT_BYTES = 64 << 20
# The replica's secrets tmpfs: the scheduler bounds one Secret to 1 MiB, and a
# replica rarely mounts more than a few.
SECRETS_TMPFS_BYTES = 8 << 20
# How often the named volumes' sizes are walked for the status reports:
# one lstat per file, so not on every report.
USAGE_SECONDS = 30.0
# Where no volume may be mounted: the container's kernel interfaces.
FORBIDDEN_MOUNT_PATHS = ("/proc", "/dev", "/sys")
# Mount options of every volume: no set-id programs or device nodes from a
# volume (Docker's default for its volumes is the same for devices).
_SAFE = ("nosuid", "nodev")


class VolumeError(Exception):
    """A volume cannot be set up; the message (for the user) names the volume and why."""


@dataclass(frozen=True)
class Sources:
    """The Configs and Secrets this node's replicas use, by (namespace, name)."""

    configs: Mapping[tuple[str, str], types_pb2.Config] = field(default_factory=dict)
    secrets: Mapping[tuple[str, str], types_pb2.Secret] = field(default_factory=dict)

    @classmethod
    def of(cls, configs: Iterable[types_pb2.Config],
           secrets: Iterable[types_pb2.Secret]) -> Sources:
        return cls({(c.metadata.namespace or "default", c.metadata.name): c for c in configs},
                   {(s.metadata.namespace or "default", s.metadata.name): s for s in secrets})

    def config(self, namespace: str, name: str, what: str) -> types_pb2.Config:
        found = self.configs.get((namespace, name))
        if found is None:
            raise VolumeError(f"{what}: config {name!r} not found in namespace {namespace!r}")
        return found

    def secret(self, namespace: str, name: str, what: str) -> types_pb2.Secret:
        found = self.secrets.get((namespace, name))
        if found is None:
            raise VolumeError(f"{what}: secret {name!r} not found in namespace {namespace!r}")
        return found


def check_mount_path(path: str, what: str) -> str:
    """`path` if a volume may be mounted there; the server checks too (common/validation.py).

    Checked again here because the node must not trust that every desired
    set came through that gate (an older scheduler, a bug).
    """
    if not path.startswith("/"):
        raise VolumeError(f"{what}: mountPath {path!r} must be absolute")
    parts = path.split("/")
    if ".." in parts or "." in parts:
        raise VolumeError(f"{what}: mountPath {path!r} must not contain '.' or '..'")
    norm = os.path.normpath(path)
    if norm == "/":
        raise VolumeError(f"{what}: mountPath must not be /")
    for bad in FORBIDDEN_MOUNT_PATHS:
        if norm == bad or norm.startswith(bad + "/"):
            raise VolumeError(f"{what}: mountPath {path!r} is under {bad}")
    return norm


def check_file_name(key: str, what: str) -> None:
    """A config or secret key becomes one file name: no slash, no dot names, no NUL."""
    if not key or key in (".", "..") or "/" in key or "\0" in key or len(key) > 255:
        raise VolumeError(f"{what}: key {key!r} is not a file name")


def parse_allow_list(text: str) -> tuple[str, ...]:
    """--host-path-allow: comma-separated absolute prefixes, normalized; '' allows none."""
    prefixes = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if not item.startswith("/") or ".." in item.split("/"):
            raise ValueError(f"--host-path-allow: {item!r} must be an absolute path without '..'")
        prefixes.append(os.path.normpath(item))
    return tuple(prefixes)


def open_host_path(path: str, allow: tuple[str, ...], what: str) -> int:
    """An O_PATH descriptor of `path`, reached beneath an allowed prefix without symlinks.

    The prefix is the operator's and is opened as given; below it each
    component is opened with O_NOFOLLOW relative to the one before, so no
    symlink (and no '..') can lead out of the prefix, and nothing renamed
    meanwhile changes what the descriptor names. The caller mounts the
    descriptor itself (/proc/self/fd/N), never the path again.
    """
    allowed = ", ".join(allow) if allow else "none"
    if not path.startswith("/") or ".." in path.split("/"):
        raise VolumeError(f"{what}: hostPath {path!r} must be absolute, without '..'")
    norm = os.path.normpath(path)
    prefix = next((p for p in sorted(allow, key=len, reverse=True)
                   if norm == p or norm.startswith(p.rstrip("/") + "/")), None)
    if prefix is None:
        raise VolumeError(f"{what}: hostPath {path!r} is not under the node's allowed "
                          f"prefixes ({allowed}; mctl-agent --host-path-allow)")
    rest = [p for p in norm[len(prefix):].split("/") if p]
    try:
        fd = os.open(prefix, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise VolumeError(f"{what}: hostPath {path!r}: allowed prefix {prefix!r}: "
                          f"{e.strerror}") from None
    try:
        for i, part in enumerate(rest):
            try:
                nfd = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as e:
                where = "/".join([prefix.rstrip("/"), *rest[:i + 1]])
                raise VolumeError(f"{what}: hostPath {path!r}: {where}: {e.strerror}") from None
            os.close(fd)
            fd = nfd
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode):
                where = "/".join([prefix.rstrip("/"), *rest[:i + 1]])
                raise VolumeError(f"{what}: hostPath {path!r}: {where} is a symlink, which "
                                  f"is not followed (allowed prefixes: {allowed})")
            if i < len(rest) - 1 and not stat.S_ISDIR(mode):
                where = "/".join([prefix.rstrip("/"), *rest[:i + 1]])
                raise VolumeError(f"{what}: hostPath {path!r}: {where} is not a directory")
        return fd
    except BaseException:
        os.close(fd)
        raise


def environment(replica: types_pb2.Replica, sources: Sources) -> dict[str, str]:
    """The env vars of `replica` taken from a Config or Secret key (valueFrom), by name."""
    namespace = replica.metadata.namespace or "default"
    out: dict[str, str] = {}
    for var in replica.spec.env:
        if not var.HasField("value_from"):
            continue
        src, what = var.value_from, f"env {var.name}"
        if src.secret:
            data = sources.secret(namespace, src.secret, what).data
            if src.key not in data:
                raise VolumeError(f"{what}: secret {src.secret!r} has no key {src.key!r}")
            raw = data[src.key]
            try:
                value = raw.decode()
            except UnicodeDecodeError:
                raise VolumeError(f"{what}: secret {src.secret!r} key {src.key!r} is not "
                                  "UTF-8 text; mount it as a file instead") from None
        elif src.config:
            cdata = sources.config(namespace, src.config, what).data
            if src.key not in cdata:
                raise VolumeError(f"{what}: config {src.config!r} has no key {src.key!r}")
            value = cdata[src.key]
        else:
            raise VolumeError(f"{what}: valueFrom names neither a config nor a secret")
        if "\0" in value:
            raise VolumeError(f"{what}: the value holds a NUL byte, which env cannot carry")
        out[var.name] = value
    return out


def uses_secrets(replica: types_pb2.Replica) -> bool:
    """Whether the replica reads a Secret (a volume or an env var's valueFrom)."""
    return (any(v.WhichOneof("source") == "secret" for v in replica.spec.volumes)
            or any(e.value_from.secret for e in replica.spec.env))


def read_only(volume: types_pb2.Volume, mount: types_pb2.VolumeMount) -> bool:
    """hostPath is read-only unless readOnly: false; configs and secrets always are."""
    kind = volume.WhichOneof("source")
    if kind in ("config", "secret"):
        return True
    if mount.HasField("read_only"):
        return mount.read_only
    return kind == "host_path"


def memory_size(volume: types_pb2.Volume, spec: types_pb2.WorkloadSpec) -> int:
    """The tmpfs size of a Memory emptyDir: its sizeLimit, else the memory limit, else a bound."""
    return (volume.empty_dir.size_limit_bytes or spec.resources.memory_bytes
            or MEMORY_DEFAULT_BYTES)


def emptydir_over(bundle: str, replica: types_pb2.Replica) -> str | None:
    """Why the container must stop for a disk emptyDir over its sizeLimit, or None."""
    for v in replica.spec.volumes:
        if (v.WhichOneof("source") == "empty_dir" and v.empty_dir.medium != "Memory"
                and v.empty_dir.size_limit_bytes > 0):
            used = tree_bytes(os.path.join(bundle, SCRATCH_DIR, v.name), set())
            if used > v.empty_dir.size_limit_bytes:
                return (f"emptyDir {v.name} uses {format_bytes_short(used)}, sizeLimit "
                        f"{format_bytes_short(v.empty_dir.size_limit_bytes)}")
    return None


@dataclass(frozen=True)
class Owner:
    """Host ids of the container's user (as its user namespace maps them, if it has one)."""

    uid: int
    gid: int
    userns: bool = False


class VolumeManager:
    """Prepares and removes the volume sources of replicas (see the module docstring)."""

    def __init__(self, state_dir: str, sys: sc.Syscalls,
                 host_path_allow: tuple[str, ...] = ()) -> None:
        self.named_root = os.path.join(state_dir, VOLUMES_DIR)
        self.sys = sys
        self.host_path_allow = host_path_allow
        # named_usage as last measured, and when (monotonic seconds).
        self._usage: dict[tuple[str, str], int] = {}
        self._usage_at = -USAGE_SECONDS
        self._usage_lock = threading.Lock()
        self._measuring = False

    def named_path(self, namespace: str, name: str) -> str:
        return os.path.join(self.named_root, namespace, name)

    def prepare(self, replica: types_pb2.Replica, bundle: str, owner: Owner,
                sources: Sources) -> list[oci.Mount]:
        """Makes the sources of every mounted volume; returns their bind mounts, parents first.

        Idempotent over what a previous call of the same bundle left (an
        agent restarted half-way): directories are reused, mounts not doubled.
        """
        spec = replica.spec
        namespace = replica.metadata.namespace or "default"
        volumes = {v.name: v for v in spec.volumes}
        mounts: list[oci.Mount] = []
        seen: set[str] = set()
        for i, m in enumerate(spec.volume_mounts):
            what = f"volumeMounts[{i}] ({m.name})"
            dest = check_mount_path(m.mount_path, what)
            if dest in seen:
                raise VolumeError(f"{what}: mountPath {dest} is mounted twice")
            seen.add(dest)
            volume = volumes.get(m.name)
            if volume is None:
                raise VolumeError(f"{what}: no volume named {m.name!r} in spec.volumes")
            source = self._source(volume, namespace, spec, bundle, owner, sources)
            options: tuple[str, ...] = ("rbind", "ro" if read_only(volume, m) else "rw", *_SAFE)
            if volume.WhichOneof("source") == "secret":
                # The remount read-only must keep the tmpfs's own flags (in a
                # user namespace they are locked).
                options += ("noexec",)
            mounts.append(oci.Mount(dest, "bind", source, options))
        # Parents before children (as Docker sorts them): /data/logs listed
        # before /data would otherwise be hidden under it.
        return sorted(mounts, key=lambda m: m.destination.count("/"))

    def _source(self, volume: types_pb2.Volume, namespace: str, spec: types_pb2.WorkloadSpec,
                bundle: str, owner: Owner, sources: Sources) -> str:
        kind, what = volume.WhichOneof("source"), f"volume {volume.name}"
        if kind == "empty_dir":
            if volume.empty_dir.medium == "Memory":
                return self._tmpfs_dir(bundle, volume.name, memory_size(volume, spec), owner)
            path = self._dir(os.path.join(bundle, SCRATCH_DIR), volume.name)
            os.chown(path, owner.uid, owner.gid)
            return path
        if kind == "volume":
            return self._named(namespace, volume.volume, owner)
        if kind == "config":
            config = sources.config(namespace, volume.config, what)
            return self._config_dir(bundle, volume.name, config, what)
        if kind == "secret":
            secret = sources.secret(namespace, volume.secret, what)
            return self._secret_dir(bundle, volume.name, secret, owner, what)
        if kind == "host_path":
            return self._host_path(bundle, volume.name, volume.host_path.path, what)
        raise VolumeError(f"{what}: no source (volume, emptyDir, config, secret or hostPath)")

    @staticmethod
    def _dir(parent: str, name: str, mode: int = 0o755) -> str:
        # 0711 parents: a user namespace's root passes through to bind its
        # volume, other host users cannot list what the bundle holds.
        os.makedirs(parent, mode=0o711, exist_ok=True)
        path = os.path.join(parent, name)
        os.makedirs(path, mode=mode, exist_ok=True)
        os.chmod(path, mode)
        return path

    def _mounted(self, path: str) -> bool:
        return path in overlay.mounts_under(path)

    def _tmpfs_dir(self, bundle: str, name: str, size: int, owner: Owner) -> str:
        path = self._dir(os.path.join(bundle, VOLUMES_DIR), name)
        if not self._mounted(path):
            self.sys.mount("tmpfs", path, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV,
                           f"size={size},mode=0755,uid={owner.uid},gid={owner.gid}")
        return path

    def _named(self, namespace: str, name: str, owner: Owner) -> str:
        parent = os.path.join(self.named_root, namespace)
        os.makedirs(self.named_root, mode=0o711, exist_ok=True)
        os.makedirs(parent, mode=0o711, exist_ok=True)
        path = os.path.join(parent, name)
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            # Kept data: its files keep the owners they have.
            if owner.userns:
                # Each container with a user namespace has host ids of its
                # own: only the top is handed to this one, so it can add
                # files; those written under another id range stay theirs.
                os.chown(path, owner.uid, owner.gid)
            return path
        os.chown(path, owner.uid, owner.gid)
        log.info("named volume created volume=%s/%s path=%s", namespace, name, path)
        return path

    def _config_dir(self, bundle: str, name: str, config: types_pb2.Config, what: str) -> str:
        path = self._dir(os.path.join(bundle, VOLUMES_DIR), name)
        self._write_files(path, {k: v.encode() for k, v in config.data.items()}, what,
                          0o444, None, 0o555)
        return path

    def _secrets_tmpfs(self, bundle: str) -> str:
        top = self._dir(bundle, SECRETS_DIR, 0o711)
        if not self._mounted(top):
            self.sys.mount("tmpfs", top, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC,
                           f"size={SECRETS_TMPFS_BYTES},mode=0711")
        return top

    def write_config(self, replica: types_pb2.Replica, bundle: str, config: oci.Config) -> None:
        """Writes config.json; onto the secrets tmpfs when the replica uses a secret.

        config.json holds the container's environment, secret values from
        valueFrom included. For a replica with secrets it is written on its
        tmpfs (0600) and the bundle's config.json is a symlink to it, which
        every runtime follows: no value reaches the node's disk, and it
        goes with the tmpfs at teardown.
        """
        if not uses_secrets(replica):
            oci.write_config(bundle, config)
            return
        top = self._secrets_tmpfs(bundle)
        oci.write_config(top, config)
        link = os.path.join(bundle, CONFIG_FILE)
        tmp = os.path.join(bundle, ".config.json.link")
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(os.path.join(SECRETS_DIR, CONFIG_FILE), tmp)
        os.replace(tmp, link)

    def _secret_dir(self, bundle: str, name: str, secret: types_pb2.Secret, owner: Owner,
                    what: str) -> str:
        top = self._secrets_tmpfs(bundle)
        path = self._dir(top, name, 0o500)
        try:
            self._write_files(path, dict(secret.data), what, 0o400, owner, 0o500)
        except OSError as e:
            raise VolumeError(f"{what}: secret {secret.metadata.name!r} not written: "
                              f"{e.strerror}") from None
        os.chown(path, owner.uid, owner.gid)
        return path

    @staticmethod
    def _write_files(path: str, data: dict[str, bytes], what: str, mode: int,
                     owner: Owner | None, dir_mode: int) -> None:
        for key in data:
            check_file_name(key, what)
        os.chmod(path, 0o700)            # the agent writes; the final mode comes after
        for key, value in data.items():
            file = os.path.join(path, key)
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            with open(fd, "wb") as f:
                f.write(value)
            if owner is not None:
                os.chown(file, owner.uid, owner.gid)
            os.chmod(file, mode)
        os.chmod(path, dir_mode)

    def _host_path(self, bundle: str, name: str, path: str, what: str) -> str:
        fd = open_host_path(path, self.host_path_allow, what)
        try:
            is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
            parent = os.path.join(bundle, VOLUMES_DIR)
            os.makedirs(parent, mode=0o711, exist_ok=True)
            target = os.path.join(parent, name)
            if is_dir:
                os.makedirs(target, mode=0o755, exist_ok=True)
            elif not os.path.lexists(target):
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            if not self._mounted(target):
                # The descriptor, not the path: what was checked is what is bound.
                self.sys.mount(f"/proc/self/fd/{fd}", target, "", sc.MS_BIND | sc.MS_REC)
            return target
        finally:
            os.close(fd)

    def teardown(self, bundle: str) -> list[str]:
        """Unmounts and removes the replica's volume sources; returns mounts still there.

        Idempotent. Named volumes are not touched.
        """
        left: list[str] = []
        for sub in (VOLUMES_DIR, SECRETS_DIR):
            top = os.path.join(bundle, sub)
            # Deepest first: a hostPath may itself hold mounts (rbind).
            for point in sorted(overlay.mounts_under(top), key=len, reverse=True):
                overlay.unmount(self.sys, point)
            still = overlay.mounts_under(top)
            if still:
                left += still
                continue
            shutil.rmtree(top, ignore_errors=True)
        shutil.rmtree(os.path.join(bundle, SCRATCH_DIR), ignore_errors=True)
        return left

    def latest_usage(self) -> dict[tuple[str, str], int]:
        """named_usage as last measured; measured again in the background when stale.

        For the status reports, which must not wait on a walk of a large
        volume: they carry the previous figures until the new ones are in.
        """
        with self._usage_lock:
            stale = time.monotonic() - self._usage_at >= USAGE_SECONDS
            if stale and not self._measuring:
                self._measuring = True
                threading.Thread(target=self._measure, name="volume-usage",
                                 daemon=True).start()
            return dict(self._usage)

    def _measure(self) -> None:
        try:
            usage = self.named_usage()
        except OSError as e:
            log.warning("named volumes not measured: %s", e)
            usage = self._usage
        with self._usage_lock:
            self._usage, self._usage_at = usage, time.monotonic()
            self._measuring = False

    def named_usage(self) -> dict[tuple[str, str], int]:
        """Bytes each named volume on this node takes (a walk, as diskusage does)."""
        out: dict[tuple[str, str], int] = {}
        try:
            namespaces = os.listdir(self.named_root)
        except FileNotFoundError:
            return out
        for ns in namespaces:
            try:
                names = os.listdir(os.path.join(self.named_root, ns))
            except OSError:
                continue
            for name in names:
                out[(ns, name)] = tree_bytes(self.named_path(ns, name), set())
        return out

"""The OCI runtime bundle: config.json as the agent writes it and the runtime reads it.

A bundle is a directory holding `config.json` and the container's root
filesystem (https://github.com/opencontainers/runtime-spec/blob/main/config.md).
It is the whole contract between the agent and a runtime: the native one in
this package, or runc/crun. `load_config` reads the subset of the spec mctl
uses, checking each field, so a bad config.json fails before any kernel state
is made, with an error that names the field.
"""

from __future__ import annotations

import os

from .. import cjson
from ..capabilities import CAPABILITIES
from ..record import Record
from .config_fields import ConfigError, _get

# typing.TYPE_CHECKING without importing typing, which `mctl-runtime run` would
# pay for at every call (bench/README.md, "Import costs on the start path");
# type checkers treat a module-level TYPE_CHECKING = False the same way.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from mctl.agent.runtime.seccomp import Profile as SeccompProfile

    from ..cgroups.extras import CgroupExtras

OCI_VERSION = "1.0.2"

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The capabilities Docker grants a container by default (moby's
# oci/caps/defaults.go); everything else is dropped.
DEFAULT_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]

# Paths Docker hides (maskedPaths) or makes read-only in every container,
# because they expose or change host state.
MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
]
READONLY_PATHS = [
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
]

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup")
# A container's namespaces unless config.json says otherwise; "user" is added
# for securityContext.userNamespace.
DEFAULT_NAMESPACES = ("pid", "network", "ipc", "uts", "mount", "cgroup")
# The resource limits setrlimit(2) knows, by their numbers in linux/resource.h
# (Python's resource module lacks RLIMIT_LOCKS).
RLIMITS = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3,
    "RLIMIT_CORE": 4, "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7,
    "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9, "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11,
    "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13, "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}
# rlimit values and ids are unsigned 64- and 32-bit numbers in the spec.
_U64_MAX = (1 << 64) - 1
_U32_MAX = (1 << 32) - 1
# Namespaces a container may join by path (setns) instead of getting a new
# one: the agent prepares the network namespace (veth, address, routes)
# before the container starts, as runc users and CNI plugins do; a pod's
# containers share mount or pid namespaces. A joined mount namespace is
# someone else's: nothing is mounted or pivoted in it (a chroot only), as
# without one. Joining user or cgroup namespaces is not supported.
JOINABLE_NAMESPACES = ("network", "ipc", "uts", "mount", "pid")
# linux.rootfsPropagation's values: the spec's four and the recursive forms runc takes.
ROOTFS_PROPAGATIONS = ("shared", "rshared", "slave", "rslave", "private", "rprivate",
                       "unbindable", "runbindable")


class Mount(Record):
    __slots__ = ("destination", "type", "source", "options")

    def __init__(self, destination: str, type: str, source: str,
                 options: tuple[str, ...] = ()) -> None:
        self.destination = destination
        self.type = type
        self.source = source
        self.options = options


class Device(Record):
    """One linux.devices entry: a node to make in the container (config.md "Devices")."""

    __slots__ = ("path", "type", "major", "minor", "file_mode", "uid", "gid")

    def __init__(self, path: str, type: str, major: int = 0, minor: int = 0,
                 file_mode: int | None = None, uid: int | None = None,
                 gid: int | None = None) -> None:
        self.path = path
        self.type = type            # "c", "u" (unbuffered char), "b" or "p" (fifo)
        self.major = major
        self.minor = minor
        self.file_mode = file_mode
        self.uid = uid
        self.gid = gid


class Rlimit(Record):
    """One process.rlimits entry: setrlimit(2) of `type` to (soft, hard)."""

    __slots__ = ("type", "soft", "hard")

    def __init__(self, type: str, soft: int, hard: int) -> None:
        self.type = type
        self.soft = soft
        self.hard = hard


class IdMapping(Record):
    """One line of /proc/PID/uid_map or gid_map (man 7 user_namespaces)."""

    __slots__ = ("container_id", "host_id", "size")

    def __init__(self, container_id: int, host_id: int, size: int) -> None:
        self.container_id = container_id
        self.host_id = host_id
        self.size = size


class Resources(Record):
    __slots__ = ("memory_limit", "memory_swap", "cpu_quota", "cpu_period", "pids_limit",
                 "memory_reservation", "memory_swappiness", "disable_oom_killer",
                 "memory_kernel_tcp", "cgroup_extras")

    def __init__(self, memory_limit: int | None = None, memory_swap: int | None = None,
                 cpu_quota: int | None = None, cpu_period: int | None = None,
                 pids_limit: int | None = None, memory_reservation: int | None = None,
                 memory_swappiness: int | None = None, disable_oom_killer: bool = False,
                 memory_kernel_tcp: int | None = None,
                 cgroup_extras: CgroupExtras | None = None) -> None:
        self.memory_limit = memory_limit
        self.memory_swap = memory_swap
        self.cpu_quota = cpu_quota
        self.cpu_period = cpu_period
        self.pids_limit = pids_limit
        # linux.resources.memory beyond the limit (cgroups/memory_extras.py).
        self.memory_reservation = memory_reservation
        self.memory_swappiness = memory_swappiness
        self.disable_oom_killer = disable_oom_killer
        self.memory_kernel_tcp = memory_kernel_tcp
        # cpu.cpus/mems, devices, blockIO (cgroups/extras.py): only mctl-runtime
        # applies them; the agent writes none but the deny-all device rule.
        self.cgroup_extras = cgroup_extras

    def has_memory_extras(self) -> bool:
        return (self.memory_reservation is not None or self.memory_swappiness is not None
                or self.disable_oom_killer or self.memory_kernel_tcp is not None)


class Hook(Record):
    """One hooks.<stage> entry (config.md "POSIX-platform Hooks"); hooks.py runs it."""

    __slots__ = ("path", "args", "env", "timeout")

    def __init__(self, path: str, args: tuple[str, ...] = (), env: tuple[str, ...] | None = None,
                 timeout: int | None = None) -> None:
        self.path = path
        self.args = args
        # None (absent): the runtime's own environment, as runc and crun pass.
        self.env = env
        self.timeout = timeout


class Hooks(Record):
    """config.json's hooks, each stage's in order (config.md names: HOOK_STAGES)."""

    __slots__ = ("prestart", "create_runtime", "create_container", "start_container",
                 "poststart", "poststop")

    def __init__(self, prestart: tuple[Hook, ...] = (), create_runtime: tuple[Hook, ...] = (),
                 create_container: tuple[Hook, ...] = (), start_container: tuple[Hook, ...] = (),
                 poststart: tuple[Hook, ...] = (), poststop: tuple[Hook, ...] = ()) -> None:
        self.prestart = prestart
        self.create_runtime = create_runtime
        self.create_container = create_container
        self.start_container = start_container
        self.poststart = poststart
        self.poststop = poststop


# config.json's name of each hook stage -> the Hooks attribute.
HOOK_STAGES = {
    "prestart": "prestart", "createRuntime": "create_runtime",
    "createContainer": "create_container", "startContainer": "start_container",
    "poststart": "poststart", "poststop": "poststop",
}


class Config(Record):
    """The parts of an OCI config.json that mctl's runtime realizes."""

    __slots__ = (
        "args", "env", "cwd", "uid", "gid", "additional_gids", "no_new_privileges",
        "capabilities", "rlimits", "terminal", "root_path", "root_readonly", "hostname",
        "mounts", "namespaces", "namespace_paths", "uid_mappings", "gid_mappings",
        "cgroups_path", "resources", "masked_paths", "readonly_paths", "annotations",
        "hooks", "sysctl", "oom_score_adj", "apparmor_profile", "selinux_label", "mount_label",
        "seccomp", "rootfs_propagation", "cap_effective", "cap_permitted", "cap_inheritable",
        "cap_ambient", "devices", "console_size",
    )

    def __init__(
        self,
        args: tuple[str, ...],
        env: tuple[str, ...] = (),
        cwd: str = "/",
        uid: int = 0,
        gid: int = 0,
        additional_gids: tuple[int, ...] = (),
        no_new_privileges: bool = True,
        capabilities: tuple[str, ...] = tuple(DEFAULT_CAPABILITIES),
        rlimits: tuple[Rlimit, ...] = (),
        terminal: bool = False,
        root_path: str = "rootfs",
        root_readonly: bool = False,
        hostname: str = "",
        mounts: tuple[Mount, ...] = (),
        namespaces: tuple[str, ...] = DEFAULT_NAMESPACES,
        namespace_paths: dict[str, str] | None = None,
        uid_mappings: tuple[IdMapping, ...] = (),
        gid_mappings: tuple[IdMapping, ...] = (),
        cgroups_path: str = "",
        resources: Resources | None = None,
        masked_paths: tuple[str, ...] = tuple(MASKED_PATHS),
        readonly_paths: tuple[str, ...] = tuple(READONLY_PATHS),
        annotations: dict[str, str] | None = None,
        hooks: Hooks | None = None,
        sysctl: dict[str, str] | None = None,
        oom_score_adj: int | None = None,
        apparmor_profile: str = "",
        selinux_label: str = "",
        mount_label: str = "",
        seccomp: SeccompProfile | None = None,
        rootfs_propagation: str = "",
        cap_effective: tuple[str, ...] | None = None,
        cap_permitted: tuple[str, ...] | None = None,
        cap_inheritable: tuple[str, ...] = (),
        cap_ambient: tuple[str, ...] = (),
        devices: tuple[Device, ...] = (),
        console_size: tuple[int, int] | None = None,
    ) -> None:
        self.args = args
        self.env = env
        self.cwd = cwd
        self.uid = uid
        self.gid = gid
        self.additional_gids = additional_gids
        self.no_new_privileges = no_new_privileges
        # process.capabilities: `capabilities` is the bounding set; effective
        # and permitted are the same unless given (None; what the agent
        # writes, and what follows a replace(capabilities=...)); inheritable
        # and ambient are empty unless given, as in Docker.
        self.capabilities = capabilities
        self.cap_effective = cap_effective
        self.cap_permitted = cap_permitted
        self.cap_inheritable = cap_inheritable
        self.cap_ambient = cap_ambient
        # linux.devices (rootfs.make_config_devices says how they are made).
        self.devices = devices
        self.rlimits = rlimits
        self.terminal = terminal
        # process.consoleSize as (height, width); None when absent (terminal.py).
        self.console_size = console_size
        self.root_path = root_path
        self.root_readonly = root_readonly
        self.hostname = hostname
        self.mounts = mounts
        self.namespaces = namespaces
        # type -> path of an existing namespace to join (setns) instead of a new one.
        self.namespace_paths = {} if namespace_paths is None else namespace_paths
        # With a "user" namespace: how its ids map to the host's.
        self.uid_mappings = uid_mappings
        self.gid_mappings = gid_mappings
        self.cgroups_path = cgroups_path
        self.resources = Resources() if resources is None else resources
        self.masked_paths = masked_paths
        self.readonly_paths = readonly_paths
        self.annotations = {} if annotations is None else annotations
        # None when config.json has no hook at all: the start path checks only that.
        self.hooks = hooks
        # linux.sysctl, in config.json's order (sysctl.py says which keys are allowed).
        self.sysctl = {} if sysctl is None else sysctl
        self.oom_score_adj = oom_score_adj
        self.apparmor_profile = apparmor_profile
        self.selinux_label = selinux_label
        self.mount_label = mount_label
        # linux.seccomp, checked and compiled (seccomp/); None: unconfined.
        self.seccomp = seccomp
        # linux.rootfsPropagation ("" when absent: the root stays private).
        self.rootfs_propagation = rootfs_propagation

    def rootfs(self, bundle: str) -> str:
        return os.path.join(bundle, self.root_path)

    def effective(self) -> tuple[str, ...]:
        return self.capabilities if self.cap_effective is None else self.cap_effective

    def permitted(self) -> tuple[str, ...]:
        return self.capabilities if self.cap_permitted is None else self.cap_permitted


def default_mounts() -> list[Mount]:
    """The kernel filesystems every container gets, as runc's spec template has them."""
    return [
        Mount("/proc", "proc", "proc", ("nosuid", "noexec", "nodev")),
        Mount("/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
        Mount("/dev/pts", "devpts", "devpts",
              ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620")),
        Mount("/dev/shm", "tmpfs", "shm",
              ("nosuid", "noexec", "nodev", "mode=1777", "size=65536k")),
        Mount("/dev/mqueue", "mqueue", "mqueue", ("nosuid", "noexec", "nodev")),
        Mount("/sys", "sysfs", "sysfs", ("nosuid", "noexec", "nodev", "ro")),
    ]


def resources_json(res: Resources) -> dict[str, Any]:
    """linux.resources for `res` (config.json; mctl-runtime's record for `update`)."""
    # Deny every device, as Docker's config does: runc and crun then allow
    # only their default nodes in the device cgroup. Both deny without it
    # too (runc 1.1, crun 1.8 here), but the spec does not promise that.
    # The native runtime needs no rule: its /dev is nodev and holds bind
    # mounts of the few nodes it allows.
    resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if res.memory_limit is not None:
        resources["memory"] = {"limit": res.memory_limit}
        if res.memory_swap is not None:
            resources["memory"]["swap"] = res.memory_swap
    if res.cpu_quota is not None:
        resources["cpu"] = {"quota": res.cpu_quota, "period": res.cpu_period or 100_000}
    if res.pids_limit is not None:
        resources["pids"] = {"limit": res.pids_limit}
    if res.has_memory_extras():
        memory = resources.setdefault("memory", {})
        for key, value in (("reservation", res.memory_reservation),
                           ("swappiness", res.memory_swappiness),
                           ("kernelTCP", res.memory_kernel_tcp)):
            if value is not None:
                memory[key] = value
        if res.disable_oom_killer:
            memory["disableOOMKiller"] = True
    if res.cgroup_extras is not None:
        from . import config_cgroups

        config_cgroups.to_json(res.cgroup_extras, resources)
    return resources


def to_json(config: Config) -> dict[str, Any]:
    """The config.json document for `config` (what runc and crun read too)."""
    resources = resources_json(config.resources)
    caps = list(config.capabilities)
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": config.terminal,
            **({"consoleSize": {"height": config.console_size[0],
                                "width": config.console_size[1]}}
               if config.console_size is not None else {}),
            "user": {"uid": config.uid, "gid": config.gid,
                     **({"additionalGids": list(config.additional_gids)}
                        if config.additional_gids else {})},
            "args": list(config.args),
            "env": list(config.env),
            "cwd": config.cwd,
            "noNewPrivileges": config.no_new_privileges,
            "capabilities": {
                "bounding": caps, "effective": list(config.effective()),
                "permitted": list(config.permitted()),
                **({"inheritable": list(config.cap_inheritable)}
                   if config.cap_inheritable else {}),
                **({"ambient": list(config.cap_ambient)} if config.cap_ambient else {}),
            },
            **({"rlimits": [{"type": r.type, "hard": r.hard, "soft": r.soft}
                            for r in config.rlimits]} if config.rlimits else {}),
            **({"oomScoreAdj": config.oom_score_adj}
               if config.oom_score_adj is not None else {}),
            **({"apparmorProfile": config.apparmor_profile} if config.apparmor_profile else {}),
            **({"selinuxLabel": config.selinux_label} if config.selinux_label else {}),
        },
        "root": {"path": config.root_path, "readonly": config.root_readonly},
        "hostname": config.hostname,
        "mounts": [
            {"destination": m.destination, "type": m.type, "source": m.source,
             "options": list(m.options)}
            for m in config.mounts
        ],
        "linux": {
            "namespaces": [{"type": t, **({"path": config.namespace_paths[t]}
                                          if t in config.namespace_paths else {})}
                           for t in config.namespaces],
            **({"uidMappings": _mappings_json(config.uid_mappings),
                "gidMappings": _mappings_json(config.gid_mappings)}
               if config.uid_mappings or config.gid_mappings else {}),
            "cgroupsPath": config.cgroups_path,
            "resources": resources,
            "maskedPaths": list(config.masked_paths),
            "readonlyPaths": list(config.readonly_paths),
            **({"sysctl": dict(config.sysctl)} if config.sysctl else {}),
            **({"mountLabel": config.mount_label} if config.mount_label else {}),
            **({"rootfsPropagation": config.rootfs_propagation}
               if config.rootfs_propagation else {}),
            **({"devices": [_device_json(d) for d in config.devices]}
               if config.devices else {}),
            **({"seccomp": config.seccomp.doc} if config.seccomp is not None else {}),
        },
        **({"hooks": hooks_json(config.hooks)} if config.hooks is not None else {}),
        "annotations": dict(config.annotations),
    }


def hooks_json(hooks: Hooks) -> dict[str, list[dict[str, Any]]]:
    """config.json's "hooks" object (also kept in mctl-runtime's state for start and delete)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for stage, attr in HOOK_STAGES.items():
        entries = getattr(hooks, attr)
        if entries:
            out[stage] = [{"path": h.path,
                           **({"args": list(h.args)} if h.args else {}),
                           **({"env": list(h.env)} if h.env is not None else {}),
                           **({"timeout": h.timeout} if h.timeout is not None else {})}
                          for h in entries]
    return out


def _device_json(d: Device) -> dict[str, Any]:
    out: dict[str, Any] = {"path": d.path, "type": d.type}
    if d.type != "p":
        out.update(major=d.major, minor=d.minor)
    for key, value in (("fileMode", d.file_mode), ("uid", d.uid), ("gid", d.gid)):
        if value is not None:
            out[key] = value
    return out


def _devices(linux: dict[str, Any]) -> tuple[Device, ...]:
    out: list[Device] = []
    for i, item in enumerate(_get(linux, "devices", list, "linux.", [])):
        where = f"linux.devices[{i}]."
        if not isinstance(item, dict):
            raise ConfigError(f"linux.devices[{i}]", "must be object")
        path = _get(item, "path", str, where, required=True)
        if not path.startswith("/dev/") or "/../" in path + "/":
            # runc allows other places; a node outside /dev would land in
            # the image's directories, which mctl-runtime mounts nodev.
            raise ConfigError(f"{where}path", f"{path!r} is not a path under /dev")
        kind = _get(item, "type", str, where, required=True)
        if kind not in ("c", "u", "b", "p"):
            raise ConfigError(f"{where}type", f"{kind!r} is not one of c, u, b, p")
        numbers = (0, 0) if kind == "p" else (_uint(item, "major", where, _U32_MAX),
                                               _uint(item, "minor", where, _U32_MAX))
        mode = _get(item, "fileMode", int, where)
        if mode is not None and not 0 <= mode <= 0o7777:
            raise ConfigError(f"{where}fileMode", f"{mode} is not a permission mode")
        ids = [_uint(item, key, where, _U32_MAX - 1) if key in item else None
               for key in ("uid", "gid")]
        out.append(Device(path, kind, *numbers, mode, *ids))
    return tuple(out)


def _mappings_json(mappings: tuple[IdMapping, ...]) -> list[dict[str, int]]:
    return [{"containerID": m.container_id, "hostID": m.host_id, "size": m.size}
            for m in mappings]


def write_config(bundle: str, config: Config) -> None:
    """Writes bundle/config.json atomically (a reader never sees half a file).

    Readable by root only: it holds the workload's environment, which may
    carry secrets.
    """
    tmp = os.path.join(bundle, ".config.json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with open(fd, "w") as f:
        # Compact, through the C encoder (json.dump, and any indent, take the
        # pure-Python one: 0.44 ms against 0.04 ms here, about a quarter of
        # the agent's Python time in a 30-replica apply).
        f.write(cjson.dumps(to_json(config), compact=True))
    os.replace(tmp, os.path.join(bundle, "config.json"))


def load_config(bundle: str, seccomp_cache: str | None = None) -> Config:
    """Reads and checks bundle/config.json (built seccomp programs kept in `seccomp_cache`)."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            doc = cjson.loads(f.read())
    except FileNotFoundError:
        raise ConfigError("config.json", f"not found in bundle {bundle}") from None
    except (OSError, ValueError) as e:
        raise ConfigError("config.json", f"cannot be read: {e}") from None
    return parse_config(doc, seccomp_cache)


def _strings(doc: dict[str, Any], key: str, where: str, required: bool = False) -> tuple[str, ...]:
    items = _get(doc, key, list, where, [], required)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ConfigError(f"{where}{key}[{i}]", "must be string")
    return tuple(items)


def _int_or_none(doc: dict[str, Any], key: str, where: str) -> int | None:
    value = _get(doc, key, int, where)
    return None if value is None else int(value)


def _uint(doc: dict[str, Any], key: str, where: str, top: int) -> int:
    value = _get(doc, key, int, where, required=True)
    if not 0 <= value <= top:
        raise ConfigError(f"{where}{key}", f"must be between 0 and {top}")
    return int(value)


def _rlimits(process: dict[str, Any]) -> tuple[Rlimit, ...]:
    out: list[Rlimit] = []
    for i, item in enumerate(_get(process, "rlimits", list, "process.", [])):
        where = f"process.rlimits[{i}]."
        if not isinstance(item, dict):
            raise ConfigError(f"process.rlimits[{i}]", "must be object")
        kind = _get(item, "type", str, where, required=True)
        if kind not in RLIMITS:
            raise ConfigError(f"{where}type", f"unknown rlimit {kind!r}")
        if any(r.type == kind for r in out):
            raise ConfigError(f"{where}type", f"{kind} is given twice")
        hard = _uint(item, "hard", where, _U64_MAX)
        soft = _uint(item, "soft", where, _U64_MAX)
        if soft > hard:
            # setrlimit(2) refuses it (EINVAL); say so before anything starts.
            raise ConfigError(f"{where}soft", f"{soft} is above the hard limit {hard}")
        out.append(Rlimit(kind, soft, hard))
    return tuple(out)


def _id_mappings(linux: dict[str, Any], key: str) -> tuple[IdMapping, ...]:
    out: list[IdMapping] = []
    for i, item in enumerate(_get(linux, key, list, "linux.", [])):
        where = f"linux.{key}[{i}]."
        if not isinstance(item, dict):
            raise ConfigError(f"linux.{key}[{i}]", "must be object")
        mapping = IdMapping(_uint(item, "containerID", where, _U32_MAX - 1),
                            _uint(item, "hostID", where, _U32_MAX - 1),
                            _uint(item, "size", where, _U32_MAX))
        if mapping.size == 0:
            raise ConfigError(f"{where}size", "must be at least 1")
        for end in (mapping.container_id, mapping.host_id):
            if end + mapping.size > _U32_MAX:
                raise ConfigError(f"{where}size", "runs past the largest id (4294967294)")
        out.append(mapping)
    return tuple(out)


def _check_user_namespace(namespaces: list[str], uid_map: tuple[IdMapping, ...],
                          gid_map: tuple[IdMapping, ...]) -> None:
    # As runc: a user namespace without mappings would run everything as
    # the overflow id, and mappings without one would be silently unused.
    if "user" in namespaces:
        for key, mappings in (("uidMappings", uid_map), ("gidMappings", gid_map)):
            if not mappings:
                raise ConfigError(f"linux.{key}", "required with a user namespace")
            if not any(m.container_id == 0 for m in mappings):
                raise ConfigError(f"linux.{key}", "must map the container's id 0 (root)")
    elif uid_map or gid_map:
        raise ConfigError("linux.uidMappings" if uid_map else "linux.gidMappings",
                          "given without a user namespace in linux.namespaces")


def _check_no_mount_namespace(doc: dict[str, Any], linux: dict[str, Any],
                              joined: bool = False) -> None:
    """Without a mount namespace of its own only a chroot is made: refuse what needs more.

    The same holds for a mount namespace joined by path: it is not ours to
    pivot or mount in (its other processes would see every change).

    A mount made then would land in the caller's mount namespace (a host
    shell's: the host's) and outlive the container; so would a pivot_root,
    which would move the root of every process in it. runc chroots there
    too, and refuses masked and read-only paths for the same reason ("unable
    to restrict sys entries without a private MNT namespace"); it does make
    config.json's mounts in the caller's namespace, which mctl-runtime refuses.
    """
    why = ("needs a mount namespace of the container's own, and linux.namespaces' "
           '"mount" entry joins one by path (the rootfs is only chrooted into; '
           "nothing is mounted in a namespace mctl-runtime did not make)" if joined else
           'needs a mount namespace, and linux.namespaces has no "mount" entry '
           "(without one the rootfs is only chrooted into; nothing is mounted "
           "in the caller's mount namespace)")
    if _get(doc, "mounts", list, "", []):
        raise ConfigError("mounts", why)
    for key in ("maskedPaths", "readonlyPaths"):
        if _get(linux, key, list, "linux.", []):
            raise ConfigError(f"linux.{key}", why)
    root = doc.get("root")
    if isinstance(root, dict) and root.get("readonly") is True:
        raise ConfigError("root.readonly", why)
    if linux.get("rootfsPropagation"):
        raise ConfigError("linux.rootfsPropagation", why)


def parse_hooks(doc: object, where: str = "hooks") -> Hooks | None:
    """config.json's "hooks" object, every field checked; None if it holds no hook.

    Unknown stages are ignored, as the spec wants of unknown properties.
    """
    if not isinstance(doc, dict):
        raise ConfigError(where, "must be object")
    stages: dict[str, tuple[Hook, ...]] = {}
    for stage, attr in HOOK_STAGES.items():
        hooks = []
        for i, item in enumerate(_get(doc, stage, list, f"{where}.", [])):
            at = f"{where}.{stage}[{i}]"
            if not isinstance(item, dict):
                raise ConfigError(at, "must be object")
            path = _get(item, "path", str, f"{at}.", required=True)
            if not path.startswith("/"):
                raise ConfigError(f"{at}.path", f"{path!r} is not an absolute path")
            env = _strings(item, "env", f"{at}.") if "env" in item else None
            for j, entry in enumerate(env or ()):
                if "=" not in entry:
                    raise ConfigError(f"{at}.env[{j}]", f"{entry!r} is not KEY=value")
            timeout = _get(item, "timeout", int, f"{at}.")
            if timeout is not None and timeout <= 0:
                raise ConfigError(f"{at}.timeout", "must be greater than zero (seconds)")
            hooks.append(Hook(path, _strings(item, "args", f"{at}."), env, timeout))
        stages[attr] = tuple(hooks)
    return Hooks(**stages) if any(stages.values()) else None


def _sysctl(linux: dict[str, Any], namespaces: list[str]) -> dict[str, str]:
    raw = _get(linux, "sysctl", dict, "linux.", {})
    if not raw:
        return {}
    from .. import sysctl  # only a config with sysctls pays for the rules

    for key, value in raw.items():
        if not isinstance(value, str):
            raise ConfigError(f"linux.sysctl.{key}", "must be string")
        problem = sysctl.problem(key, namespaces)
        if problem:
            raise ConfigError(f"linux.sysctl.{key}", problem)
    return dict(raw)


def _oom_score_adj(process: dict[str, Any]) -> int | None:
    value: int | None = _get(process, "oomScoreAdj", int, "process.")
    # The kernel's range (man 5 proc, /proc/pid/oom_score_adj).
    if value is not None and not -1000 <= value <= 1000:
        raise ConfigError("process.oomScoreAdj", f"{value} is not between -1000 and 1000")
    return value


def _seccomp(linux: dict[str, Any], cache_dir: str | None) -> SeccompProfile | None:
    if linux.get("seccomp") is None:
        return None
    # Imported only for a config with a profile: a start without one loads
    # neither the profile checker nor libseccomp.
    from .. import seccomp

    try:
        return seccomp.parse(linux["seccomp"], disk_cache=cache_dir)
    except seccomp.ProfileError as e:
        raise ConfigError(e.field_path, e.problem) from None


CAPABILITY_SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")


def _capability_sets(process: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """process.capabilities, each set checked; a set not given is empty, as in runc.

    Without the object at all, Docker's default set is bounding, effective
    and permitted. An ambient capability must be permitted and in the bounding
    set, or the kernel would refuse to raise it (PR_CAP_AMBIENT_RAISE: EPERM).
    """
    caps = _get(process, "capabilities", dict, "process.", None)
    if caps is None:
        default = tuple(DEFAULT_CAPABILITIES)
        return {"bounding": default, "effective": default, "permitted": default,
                "inheritable": (), "ambient": ()}
    sets = {}
    for key in CAPABILITY_SETS:
        names = _strings(caps, key, "process.capabilities.")
        for i, name in enumerate(names):
            if name not in CAPABILITIES:
                raise ConfigError(f"process.capabilities.{key}[{i}]",
                                  f"unknown capability {name!r}")
        sets[key] = names
    for i, name in enumerate(sets["ambient"]):
        for key in ("permitted", "bounding"):
            if name not in sets[key]:
                raise ConfigError(f"process.capabilities.ambient[{i}]",
                                  f"{name} is not in process.capabilities.{key} "
                                  "(an ambient capability must be permitted and bounding)")
    return sets


def _unless_bounding(sets: dict[str, tuple[str, ...]], key: str) -> tuple[str, ...] | None:
    return None if sets[key] == sets["bounding"] else sets[key]


def _swappiness(mem: dict[str, Any]) -> int | None:
    value: int | None = _get(mem, "swappiness", int, "linux.resources.memory.")
    # The kernel's range (memory.swappiness); runc refuses the rest too.
    if value is not None and not 0 <= value <= 100:
        raise ConfigError("linux.resources.memory.swappiness",
                          f"{value} is not between 0 and 100")
    return value


def _check_version(doc: dict[str, Any]) -> None:
    """ociVersion: the runtime-spec releases this runtime follows, 1.0.x to 1.2.x.

    Absent is taken as the agent's own 1.0.2 (older bundles of this project
    wrote it, the spec marks it required); `runc spec` writes "1.0.2-dev".
    """
    version = _get(doc, "ociVersion", str, "")
    if version is None:
        return
    release, _, _ = version.partition("-")
    parts = release.split(".")
    if (len(parts) != 3 or not all(p.isdigit() for p in parts)
            or parts[0] != "1" or int(parts[1]) > 2):
        raise ConfigError("ociVersion", f"{version!r} is not supported "
                                        "(runtime-spec 1.0.x, 1.1.x or 1.2.x)")


def _rootfs_propagation(linux: dict[str, Any]) -> str:
    value: str = _get(linux, "rootfsPropagation", str, "linux.", "")
    if value and value not in ROOTFS_PROPAGATIONS:
        raise ConfigError("linux.rootfsPropagation",
                          f"{value!r} is not one of {', '.join(ROOTFS_PROPAGATIONS)}")
    return value


def _console_size(process: dict[str, Any]) -> tuple[int, int] | None:
    """process.consoleSize: (height, width) in characters, each an unsigned 16-bit number."""
    size = _get(process, "consoleSize", dict, "process.", None)
    if size is None:
        return None
    where = "process.consoleSize."
    return _uint(size, "height", where, 0xFFFF), _uint(size, "width", where, 0xFFFF)


def parse_resources(res: dict[str, Any]) -> Resources:
    """A linux.resources object (config.json; `mctl-runtime update -r FILE`)."""
    mem = _get(res, "memory", dict, "linux.resources.", {})
    cpu = _get(res, "cpu", dict, "linux.resources.", {})
    pids = _get(res, "pids", dict, "linux.resources.", {})
    return Resources(
        memory_limit=_int_or_none(mem, "limit", "linux.resources.memory."),
        memory_swap=_int_or_none(mem, "swap", "linux.resources.memory."),
        cpu_quota=_int_or_none(cpu, "quota", "linux.resources.cpu."),
        cpu_period=_int_or_none(cpu, "period", "linux.resources.cpu."),
        pids_limit=_int_or_none(pids, "limit", "linux.resources.pids."),
        memory_reservation=_int_or_none(mem, "reservation", "linux.resources.memory."),
        memory_swappiness=_swappiness(mem),
        disable_oom_killer=_get(mem, "disableOOMKiller", bool, "linux.resources.memory.",
                                False),
        memory_kernel_tcp=_int_or_none(mem, "kernelTCP", "linux.resources.memory."),
        cgroup_extras=_cgroup_extras(res),
    )


def _cgroup_extras(res: dict[str, Any]) -> CgroupExtras | None:
    """cpu.cpus/mems, devices and blockIO; their parser is imported only if one is given."""
    cpu = res.get("cpu")
    devices = res.get("devices")
    if devices == [{"allow": False, "access": "rwm"}]:
        devices = None  # the agent's lone deny-all: what mctl-runtime starts from anyway
    if devices is not None or "blockIO" in res or isinstance(cpu, dict) and (
            "cpus" in cpu or "mems" in cpu):
        from . import config_cgroups

        return config_cgroups.parse(res)
    return None


def parse_config(doc: object, seccomp_cache: str | None = None) -> Config:
    if not isinstance(doc, dict):
        raise ConfigError("config.json", "must be a JSON object")
    _check_version(doc)
    process = _get(doc, "process", dict, "", required=True)
    args = _strings(process, "args", "process.", required=True)
    if not args:
        raise ConfigError("process.args", "must not be empty")
    cwd = _get(process, "cwd", str, "process.", "/")
    if not cwd.startswith("/"):
        raise ConfigError("process.cwd", f"{cwd!r} is not an absolute path")
    user = _get(process, "user", dict, "process.", {})
    # Checked here, else setuid/setgroups fail in the child with no field named.
    for key in ("uid", "gid"):
        if _get(user, key, int, "process.user.", 0) < 0:
            raise ConfigError(f"process.user.{key}", "must not be negative")
    for i, gid in enumerate(_get(user, "additionalGids", list, "process.user.", [])):
        if isinstance(gid, bool) or not isinstance(gid, int) or gid < 0:
            raise ConfigError(f"process.user.additionalGids[{i}]", "must be a non-negative int")
    cap_sets = _capability_sets(process)
    root = _get(doc, "root", dict, "", required=True)
    linux = _get(doc, "linux", dict, "", {})
    mounts = []
    for i, m in enumerate(_get(doc, "mounts", list, "", [])):
        where = f"mounts[{i}]."
        if not isinstance(m, dict):
            raise ConfigError(f"mounts[{i}]", "must be object")
        dest = _get(m, "destination", str, where, required=True)
        if not dest.startswith("/"):
            raise ConfigError(f"{where}destination", f"{dest!r} is not an absolute path")
        mounts.append(Mount(dest, _get(m, "type", str, where, "bind"),
                            _get(m, "source", str, where, ""),
                            _strings(m, "options", where)))
    namespaces = []
    namespace_paths: dict[str, str] = {}
    for i, ns in enumerate(_get(linux, "namespaces", list, "linux.", [])):
        if not isinstance(ns, dict):
            raise ConfigError(f"linux.namespaces[{i}]", "must be object")
        kind = _get(ns, "type", str, f"linux.namespaces[{i}].", required=True)
        if kind not in NAMESPACE_TYPES:
            raise ConfigError(f"linux.namespaces[{i}].type",
                              f"{kind!r} is not one of {', '.join(NAMESPACE_TYPES)}")
        if kind in namespaces:
            # As runc ("duplicated ns"): which entry's path would apply is unclear.
            raise ConfigError(f"linux.namespaces[{i}].type", f"{kind!r} is given twice")
        if "path" in ns:
            if kind not in JOINABLE_NAMESPACES:
                raise ConfigError(f"linux.namespaces[{i}].path",
                                  f"joining a {kind} namespace is not supported")
            path = _get(ns, "path", str, f"linux.namespaces[{i}].")
            if not path.startswith("/"):
                raise ConfigError(f"linux.namespaces[{i}].path",
                                  f"{path!r} is not an absolute path")
            namespace_paths[kind] = path
        namespaces.append(kind)
    uid_mappings = _id_mappings(linux, "uidMappings")
    gid_mappings = _id_mappings(linux, "gidMappings")
    _check_user_namespace(namespaces, uid_mappings, gid_mappings)
    if "mount" not in namespaces or "mount" in namespace_paths:
        _check_no_mount_namespace(doc, linux, "mount" in namespace_paths)
    if "pid" in namespace_paths and "user" in namespaces:
        raise ConfigError(f"linux.namespaces[{namespaces.index('pid')}].path",
                          "joining a pid namespace is not supported with a user namespace")
    res = _get(linux, "resources", dict, "linux.", {})
    annotations = _get(doc, "annotations", dict, "", {})
    return Config(
        args=args,
        env=_strings(process, "env", "process."),
        cwd=cwd,
        uid=_get(user, "uid", int, "process.user.", 0),
        gid=_get(user, "gid", int, "process.user.", 0),
        additional_gids=tuple(_get(user, "additionalGids", list, "process.user.", [])),
        no_new_privileges=_get(process, "noNewPrivileges", bool, "process.", False),
        capabilities=cap_sets["bounding"],
        # None when equal to the bounding set: the agent's own configs.
        cap_effective=_unless_bounding(cap_sets, "effective"),
        cap_permitted=_unless_bounding(cap_sets, "permitted"),
        cap_inheritable=cap_sets["inheritable"],
        cap_ambient=cap_sets["ambient"],
        rlimits=_rlimits(process),
        terminal=_get(process, "terminal", bool, "process.", False),
        console_size=_console_size(process),
        root_path=_get(root, "path", str, "root.", required=True),
        root_readonly=_get(root, "readonly", bool, "root.", False),
        hostname=_get(doc, "hostname", str, "", ""),
        mounts=tuple(mounts),
        namespaces=tuple(namespaces),
        namespace_paths=namespace_paths,
        uid_mappings=uid_mappings,
        gid_mappings=gid_mappings,
        cgroups_path=_get(linux, "cgroupsPath", str, "linux.", ""),
        resources=parse_resources(res),
        masked_paths=_strings(linux, "maskedPaths", "linux."),
        readonly_paths=_strings(linux, "readonlyPaths", "linux."),
        annotations={str(k): str(v) for k, v in annotations.items()},
        hooks=parse_hooks(doc["hooks"]) if "hooks" in doc else None,
        sysctl=_sysctl(linux, namespaces),
        oom_score_adj=_oom_score_adj(process),
        apparmor_profile=_get(process, "apparmorProfile", str, "process.", ""),
        selinux_label=_get(process, "selinuxLabel", str, "process.", ""),
        mount_label=_get(linux, "mountLabel", str, "linux.", ""),
        seccomp=_seccomp(linux, seccomp_cache),
        rootfs_propagation=_rootfs_propagation(linux),
        devices=_devices(linux),
    )

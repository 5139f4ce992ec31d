"""The OCI runtime bundle: config.json as the agent writes it and the runtime reads it.

A bundle is a directory holding `config.json` and the container's root
filesystem (https://github.com/opencontainers/runtime-spec/blob/main/config.md).
It is the whole contract between the agent and a runtime: the native one in
this package, or runc/crun. `load_config` reads the subset of the spec mctl
uses, checking each field, so a bad config.json fails before any kernel state
is made, with an error that names the field.
"""

from __future__ import annotations

import json
import os

from ..capabilities import CAPABILITIES
from ..record import Record

# typing.TYPE_CHECKING without importing typing, which `mctl-runtime run` would
# pay for at every call (bench/README.md, "Import costs on the start path");
# type checkers treat a module-level TYPE_CHECKING = False the same way.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from mctl.agent.runtime.seccomp import Profile as SeccompProfile

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
# before the container starts, as runc users and CNI plugins do.
JOINABLE_NAMESPACES = ("network", "ipc", "uts")


class ConfigError(ValueError):
    """config.json is missing, unreadable or has a bad field."""

    def __init__(self, field_path: str, problem: str) -> None:
        super().__init__(f"config.json: {field_path}: {problem}")
        self.field_path = field_path
        self.problem = problem


class Mount(Record):
    __slots__ = ("destination", "type", "source", "options")

    def __init__(self, destination: str, type: str, source: str,
                 options: tuple[str, ...] = ()) -> None:
        self.destination = destination
        self.type = type
        self.source = source
        self.options = options


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
    __slots__ = ("memory_limit", "memory_swap", "cpu_quota", "cpu_period", "pids_limit")

    def __init__(self, memory_limit: int | None = None, memory_swap: int | None = None,
                 cpu_quota: int | None = None, cpu_period: int | None = None,
                 pids_limit: int | None = None) -> None:
        self.memory_limit = memory_limit
        self.memory_swap = memory_swap
        self.cpu_quota = cpu_quota
        self.cpu_period = cpu_period
        self.pids_limit = pids_limit


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
        "seccomp",
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
    ) -> None:
        self.args = args
        self.env = env
        self.cwd = cwd
        self.uid = uid
        self.gid = gid
        self.additional_gids = additional_gids
        self.no_new_privileges = no_new_privileges
        self.capabilities = capabilities
        self.rlimits = rlimits
        self.terminal = terminal
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

    def rootfs(self, bundle: str) -> str:
        return os.path.join(bundle, self.root_path)


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


def to_json(config: Config) -> dict[str, Any]:
    """The config.json document for `config` (what runc and crun read too)."""
    res = config.resources
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
    caps = list(config.capabilities)
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": config.terminal,
            "user": {"uid": config.uid, "gid": config.gid,
                     **({"additionalGids": list(config.additional_gids)}
                        if config.additional_gids else {})},
            "args": list(config.args),
            "env": list(config.env),
            "cwd": config.cwd,
            "noNewPrivileges": config.no_new_privileges,
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
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
        json.dump(to_json(config), f, indent=1)
    os.replace(tmp, os.path.join(bundle, "config.json"))


def load_config(bundle: str, seccomp_cache: str | None = None) -> Config:
    """Reads and checks bundle/config.json (built seccomp programs kept in `seccomp_cache`)."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except FileNotFoundError:
        raise ConfigError("config.json", f"not found in bundle {bundle}") from None
    except (OSError, ValueError) as e:
        raise ConfigError("config.json", f"cannot be read: {e}") from None
    return parse_config(doc, seccomp_cache)


def _get(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str,
         default: Any = None, required: bool = False) -> Any:
    if key not in doc:
        if required:
            raise ConfigError(f"{where}{key}", "required")
        return default
    value = doc[key]
    if isinstance(value, bool) and kind is int or not isinstance(value, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        names = " or ".join(k.__name__.replace("str", "string").replace("dict", "object")
                            .replace("list", "array") for k in kinds)
        raise ConfigError(f"{where}{key}", f"must be {names}")
    return value


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


def parse_config(doc: object, seccomp_cache: str | None = None) -> Config:
    if not isinstance(doc, dict):
        raise ConfigError("config.json", "must be a JSON object")
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
    caps = _get(process, "capabilities", dict, "process.", None)
    capabilities = (tuple(DEFAULT_CAPABILITIES) if caps is None
                    else _strings(caps, "bounding", "process.capabilities."))
    for i, name in enumerate(capabilities):
        if name not in CAPABILITIES:
            raise ConfigError(f"process.capabilities.bounding[{i}]",
                              f"unknown capability {name!r}")
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
    res = _get(linux, "resources", dict, "linux.", {})
    mem = _get(res, "memory", dict, "linux.resources.", {})
    cpu = _get(res, "cpu", dict, "linux.resources.", {})
    pids = _get(res, "pids", dict, "linux.resources.", {})
    annotations = _get(doc, "annotations", dict, "", {})
    return Config(
        args=args,
        env=_strings(process, "env", "process."),
        cwd=cwd,
        uid=_get(user, "uid", int, "process.user.", 0),
        gid=_get(user, "gid", int, "process.user.", 0),
        additional_gids=tuple(_get(user, "additionalGids", list, "process.user.", [])),
        no_new_privileges=_get(process, "noNewPrivileges", bool, "process.", False),
        capabilities=capabilities,
        rlimits=_rlimits(process),
        terminal=_get(process, "terminal", bool, "process.", False),
        root_path=_get(root, "path", str, "root.", required=True),
        root_readonly=_get(root, "readonly", bool, "root.", False),
        hostname=_get(doc, "hostname", str, "", ""),
        mounts=tuple(mounts),
        namespaces=tuple(namespaces),
        namespace_paths=namespace_paths,
        uid_mappings=uid_mappings,
        gid_mappings=gid_mappings,
        cgroups_path=_get(linux, "cgroupsPath", str, "linux.", ""),
        resources=Resources(
            memory_limit=_int_or_none(mem, "limit", "linux.resources.memory."),
            memory_swap=_int_or_none(mem, "swap", "linux.resources.memory."),
            cpu_quota=_int_or_none(cpu, "quota", "linux.resources.cpu."),
            cpu_period=_int_or_none(cpu, "period", "linux.resources.cpu."),
            pids_limit=_int_or_none(pids, "limit", "linux.resources.pids."),
        ),
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
    )

"""The rules a workload must satisfy, checked on the `Workload` message itself.

The scheduler is the gate: its Apply runs these checks on every request, so
a raw gRPC client is held to the same rules as `mctl apply`, and the CLI
runs them too (after parsing YAML, through common/spec.py) to name the file
and document of a problem before anything is sent. A problem is reported at
its field path in the user's YAML terms (`spec.ports[1].hostPort`,
`metadata.labels["x.io/a"]`), with a short lowercase sentence that quotes
the bad value.

What only YAML can get wrong (unknown fields, a string where a number
belongs, "64Mb" that is no quantity, a number too big for the message) is
the parser's business; everything a message can carry wrong is checked
here: names, ranges, choices, duplicates, references, and sizes.

The sizes are bounded so that one apply fits etcd's request limit (1.5 MiB
by default, and the apply is one transaction of at most 128 operations) and
every replica record, which carries a copy of its spec, stays small. The
replica cap is the scheduler's `--max-replicas`, the lowest host port its
`--host-port-min` (ports below it are the node's own: ssh on 22, DNS on 53);
the CLI cannot know them and leaves them to the server. The scheduler's
`--max-cluster-replicas` bounds the sum over every workload: that one needs
the cluster's state, which the caller gives (`cluster_replicas_problem`).

Configs and Secrets (`config_problem`, `secret_problem`) are bounded per
object (MAX_OBJECT_BYTES) and their keys are file names, since each key
becomes a file in a mounted volume. A workload's volumes, mounts and env
`valueFrom` are checked here too; whether the Configs and Secrets they name
exist is a question about the cluster, which the caller answers
(`reference_problem`).

Pure: no gRPC, no store, nothing but the messages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence, Sized
from dataclasses import dataclass

from mctl.common import imageref, names, registryauth
from mctl.common.names import quote
from mctl.common.quantity import format_memory
from mctl.v1 import types_pb2

PROTOCOLS = ("TCP", "UDP")
RESTART_POLICIES = ("Always", "OnFailure", "Never")
# IfNotPresent is stored as "" (spec.py).
IMAGE_PULL_POLICIES = ("IfNotPresent", "Always")
# security_context.seccomp_profile as stored: "" is RuntimeDefault (see types.proto).
STORED_SECCOMP_PROFILES = ("", "Unconfined")

DEFAULT_MAX_REPLICAS = 1000
# What a small cluster can hold without its lists and its controller's
# passes slowing to a crawl (bench/README.md has the measured figures).
DEFAULT_MAX_CLUSTER_REPLICAS = 10_000
# Ports below this are privileged, and where a node's own services listen.
DEFAULT_HOST_PORT_MIN = 1024
MAX_WORKLOADS_PER_APPLY = 100        # etcd allows 128 operations in one transaction
MAX_APPLY_BYTES = 1 << 20            # etcd's default request limit is 1.5 MiB
MAX_WORKLOAD_BYTES = 64 << 10        # copied into each of up to --max-replicas records
MAX_LIST_ITEMS = 256                 # command, args, env, ports, exec, labels, nodeSelector
MAX_STRING_BYTES = 16 << 10          # one argv element or env value
MAX_PATH_BYTES = 4096                # PATH_MAX
# resources.disk (0: the node's default). Below 1Mi a container's own /etc
# files and first log lines would get it stopped; above 64Ti no node has the disk.
MIN_DISK_BYTES = 1 << 20
MAX_DISK_BYTES = 64 << 40

# A Config or Secret: its data, encoded, at most this big (as a Kubernetes
# ConfigMap or Secret); one apply with everything in it stays below etcd's
# 1.5 MiB request limit.
MAX_OBJECT_BYTES = 1 << 20
MAX_REQUEST_BYTES = MAX_APPLY_BYTES + (MAX_APPLY_BYTES >> 2)
MAX_OBJECTS_PER_APPLY = 100
# A key is a file name in the volume (and at most this long, as Kubernetes').
MAX_KEY_BYTES = 253
# emptyDir sizeLimit: below 1Mi nothing useful fits; above 1Ti no node has it.
MIN_EMPTY_DIR_BYTES = 1 << 20
MAX_EMPTY_DIR_BYTES = 1 << 40
EMPTY_DIR_MEDIA = ("", "Memory")
# The kernel's own filesystems in a container: a volume over them would hide
# what the runtime mounted there (and /proc, /sys masking with it).
RESERVED_MOUNT_PATHS = ("/proc", "/dev", "/sys")

_KEY = re.compile(r"\A[-._a-zA-Z0-9]+\Z")
_ENV_NAME = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*\Z")
# A key that reads unambiguously after a "." in a field path; others are quoted.
_PLAIN_KEY = re.compile(r"\A[A-Za-z_][A-Za-z0-9_-]*\Z")


@dataclass(frozen=True)
class Limits:
    """The limits that are the scheduler's to set; None leaves a check to the server."""

    max_replicas: int | None = DEFAULT_MAX_REPLICAS
    host_port_min: int | None = DEFAULT_HOST_PORT_MIN


SERVER_LIMITS = Limits()
# The CLI's: it cannot know the scheduler's --max-replicas or --host-port-min.
CLIENT_LIMITS = Limits(max_replicas=None, host_port_min=None)


@dataclass(frozen=True)
class FieldProblem:
    """What is wrong (`problem`) and where (`field`, "" for the workload as a whole)."""

    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.field}: {self.problem}" if self.field else self.problem


class _Invalid(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.found = FieldProblem(field, problem)


def child(path: str, key: object) -> str:
    """The path of `key` under `path`: `spec.env.A`, or `metadata.labels["x.io/a"]`."""
    text = str(key)
    if not _PLAIN_KEY.match(text):
        return f"{path}[{quote(text)}]"
    return f"{path}.{text}" if path else text


def _env_name_problem(name: str) -> str | None:
    if _ENV_NAME.match(name):
        return None
    return (f"{quote(name)} is not a valid variable name:"
            ' use letters, digits and "_", not starting with a digit')


# ---------------------------------------------------------------------------
# Small checks, each raising at its field


def _check(ok: bool, field: str, problem: str) -> None:
    if not ok:
        raise _Invalid(field, problem)


# These run on every entry of every apply: each makes its message only on failure.

def _in_range(value: int, field: str, minimum: int, maximum: int | None = None,
              why: str = "") -> None:
    if value < minimum:
        raise _Invalid(field, f"must be at least {minimum}, not {value}")
    if maximum is not None and value > maximum:
        raise _Invalid(field, f"must be at most {maximum}, not {value}{why}")


def _one_of(value: str, field: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise _Invalid(field, f"must be one of {', '.join(choices)}, not {quote(value)}")


def _text(value: str, field: str, limit: int = MAX_STRING_BYTES) -> None:
    size = len(value.encode())
    if size > limit:
        raise _Invalid(field, f"is {size} bytes long; at most {limit}")
    # Unusable in argv, environment and paths: the kernel reads them as C strings.
    if "\0" in value:
        raise _Invalid(field, f"{quote(value)} contains a NUL character")


def _count(items: Sized, field: str) -> None:
    if len(items) > MAX_LIST_ITEMS:
        raise _Invalid(field, f"has {len(items)} entries; at most {MAX_LIST_ITEMS}")


def _dns_label(value: str, field: str) -> None:
    if problem := names.validate_dns_label(value):
        raise _Invalid(field, problem)


def _labels(labels: Mapping[str, str], field: str) -> None:
    _count(labels, field)
    for key in sorted(labels):  # a map's order is not the file's: be deterministic
        if problem := names.validate_label_key(key):
            raise _Invalid(field, problem)
        if problem := names.validate_label_value(labels[key]):
            raise _Invalid(child(field, key), problem)


def _argv(argv: Sequence[str], field: str) -> None:
    """An argv list; its first element, when it names the program, must not be empty."""
    _count(argv, field)
    for i, arg in enumerate(argv):
        _text(arg, f"{field}[{i}]")


def _program(argv: Sequence[str], field: str) -> None:
    if argv:
        _check(argv[0] != "", f"{field}[0]", "must not be empty: it names the program to run")


# ---------------------------------------------------------------------------
# The parts of a workload


def _check_metadata(meta: types_pb2.ObjectMeta) -> None:
    # As DNS labels, a replica (at most 63 characters, reconcile.py cuts its
    # workload part), its workload and namespace always make a service name
    # `<replica>.<workload>.<namespace>.mctl` of at most 63*3 + 4 + 3 = 196
    # characters: within DNS's 253, so no combined length needs a check.
    _dns_label(meta.name, "metadata.name")
    _dns_label(meta.namespace, "metadata.namespace")
    _labels(meta.labels, "metadata.labels")
    # uid, generation, createdUnixMs and deletionRequested are the server's
    # to write: Apply overwrites whatever a client sends.


def _check_image(image: str) -> None:
    _check(image != "", "spec.image", "must not be empty")
    if imageref.problem(image) is None:
        return
    if "@" in image and imageref.registry_of(image) is not None:
        # Pinned to a digest: only a registry can serve an image by its digest.
        problem = imageref.reference_problem(image)
        if problem is None:
            return
        if "digest after @" in problem:
            raise _Invalid("spec.image", f"{quote(image)}: the digest after @ must be "
                                         "sha256: and 64 lowercase hex digits")
    elif "@" in image:
        raise _Invalid("spec.image", f"{quote(image)} is a digest reference; give NAME[:TAG]")
    raise _Invalid("spec.image", f"{quote(image)} is not an image reference (lowercase"
                                 " NAME[:TAG], e.g. registry.local:5000/team/app:1.2)")


def _check_env(env: Sequence[types_pb2.EnvVar]) -> None:
    _count(env, "spec.env")
    seen: set[str] = set()
    for i, var in enumerate(env):
        if problem := _env_name_problem(var.name):
            raise _Invalid(f"spec.env[{i}].name", problem)
        if var.name in seen:
            raise _Invalid(f"spec.env[{i}].name", f"{quote(var.name)} is set twice")
        seen.add(var.name)
        _text(var.value, f"spec.env[{i}].value")
        if var.HasField("value_from"):
            _check_value_from(var, f"spec.env[{i}]")


def key_problem(key: str) -> str | None:
    """Why `key` cannot be a Config's or Secret's key (a file name), or None."""
    if not _KEY.match(key):
        return (f"{quote(key)} is not a valid key: use letters, digits, \"-\", \"_\" and"
                ' "." (it becomes a file name)')
    if key in (".", ".."):
        return f"{quote(key)} is not a valid key: it is not a file name"
    if len(key) > MAX_KEY_BYTES:
        return f"is {len(key)} characters long; at most {MAX_KEY_BYTES}"
    return None


def _check_value_from(var: types_pb2.EnvVar, path: str) -> None:
    source = var.value_from
    _check(var.value == "", f"{path}.value", "must not be given with valueFrom")
    has_config, has_secret = source.config != "", source.secret != ""
    if has_config == has_secret:
        raise _Invalid(f"{path}.valueFrom", "needs exactly one of config or secret, not "
                                            + ("both" if has_config else "neither"))
    _dns_label(source.config or source.secret,
               f"{path}.valueFrom." + ("config" if has_config else "secret"))
    _check(source.key != "", f"{path}.valueFrom.key", "required")
    if problem := key_problem(source.key):
        raise _Invalid(f"{path}.valueFrom.key", problem)


def _clean_path(path: str, field: str) -> None:
    """An absolute path without "." or ".." parts (what it names is what it says)."""
    _text(path, field, MAX_PATH_BYTES)
    _check(path.startswith("/"), field, f"{quote(path)} is not an absolute path")
    parts = path.split("/")
    _check(".." not in parts and "." not in parts, field,
           f"{quote(path)} must not contain \".\" or \"..\" parts")


def _normal(path: str) -> str:
    return "/" + "/".join(part for part in path.split("/") if part)


_SOURCES = "volume, emptyDir, config, secret or hostPath"


def _check_volumes(s: types_pb2.WorkloadSpec) -> None:
    _count(s.volumes, "spec.volumes")
    kinds: dict[str, str] = {}
    for i, v in enumerate(s.volumes):
        path = f"spec.volumes[{i}]"
        _dns_label(v.name, f"{path}.name")
        if v.name in kinds:
            raise _Invalid(f"{path}.name", f"{quote(v.name)} is declared twice")
        source = v.WhichOneof("source")
        if source is None:
            raise _Invalid(path, f"needs exactly one of {_SOURCES}, not neither")
        kinds[v.name] = source
        if source == "volume":
            _dns_label(v.volume, f"{path}.volume")
        elif source == "config":
            _dns_label(v.config, f"{path}.config")
        elif source == "secret":
            _dns_label(v.secret, f"{path}.secret")
        elif source == "empty_dir":
            _one_of(v.empty_dir.medium, f"{path}.emptyDir.medium", EMPTY_DIR_MEDIA)
            size = v.empty_dir.size_limit_bytes
            if size and not MIN_EMPTY_DIR_BYTES <= size <= MAX_EMPTY_DIR_BYTES:
                raise _Invalid(f"{path}.emptyDir.sizeLimit",
                               f"must be between {format_memory(MIN_EMPTY_DIR_BYTES)} and"
                               f" {format_memory(MAX_EMPTY_DIR_BYTES)}, not"
                               f" {format_memory(size)}")
        else:
            _clean_path(v.host_path.path, f"{path}.hostPath.path")
            _check(v.host_path.path != "/", f"{path}.hostPath.path",
                   "must not be the node's root")
    _count(s.volume_mounts, "spec.volumeMounts")
    mounted: dict[str, str] = {}
    for i, m in enumerate(s.volume_mounts):
        path = f"spec.volumeMounts[{i}]"
        _check(m.name != "", f"{path}.name", "required")
        if m.name not in kinds:
            raise _Invalid(f"{path}.name", f"{quote(m.name)} names no volume of spec.volumes")
        _clean_path(m.mount_path, f"{path}.mountPath")
        target = _normal(m.mount_path)
        _check(target != "/", f"{path}.mountPath", "must not be the container's root")
        for reserved in RESERVED_MOUNT_PATHS:
            _check(target != reserved and not target.startswith(reserved + "/"),
                   f"{path}.mountPath", f"{quote(m.mount_path)} is under {reserved}, which the"
                                        " runtime mounts itself")
        if target in mounted:
            raise _Invalid(f"{path}.mountPath", f"{quote(m.mount_path)} is already mounted by"
                                                f" {mounted[target]}")
        mounted[target] = path
        if (m.HasField("read_only") and not m.read_only
                and kinds[m.name] in ("config", "secret")):
            raise _Invalid(f"{path}.readOnly", f"{kinds[m.name]} volumes are read-only")


def _check_resources(r: types_pb2.Resources) -> None:
    # 0 would be no limit at all (and, for placement, a free replica).
    _check(r.cpu_millis > 0, "spec.resources.cpu", f"must be more than 0, not {r.cpu_millis}m")
    _check(r.memory_bytes > 0, "spec.resources.memory",
           f"must be more than 0, not {r.memory_bytes}")
    _in_range(r.pids, "spec.resources.pids", 1)
    if r.disk_bytes and not MIN_DISK_BYTES <= r.disk_bytes <= MAX_DISK_BYTES:
        raise _Invalid("spec.resources.disk",
                       f"must be between {format_memory(MIN_DISK_BYTES)} and"
                       f" {format_memory(MAX_DISK_BYTES)}, not {format_memory(r.disk_bytes)}")


def _check_ports(ports: Sequence[types_pb2.Port], host_port_min: int | None) -> None:
    _count(ports, "spec.ports")
    published: dict[tuple[int, str], str] = {}
    declared: dict[tuple[int, str], str] = {}
    named: dict[str, str] = {}                      # name -> the entry that has it
    port_names: dict[tuple[int, str], tuple[str, str]] = {}   # port -> (name, entry)
    for i, port in enumerate(ports):
        path = f"spec.ports[{i}]"
        _in_range(port.container_port, f"{path}.containerPort", 1, 65535)
        _in_range(port.host_port, f"{path}.hostPort", 0, 65535)
        if port.host_port and host_port_min is not None and port.host_port < host_port_min:
            # 0 is "not published"; a low port is the node's own (ssh, DNS).
            raise _Invalid(f"{path}.hostPort", f"must be at least {host_port_min}, not"
                                               f" {port.host_port} (the scheduler's"
                                               " --host-port-min)")
        _one_of(port.protocol, f"{path}.protocol", PROTOCOLS)
        key = (port.host_port, port.protocol)
        if port.host_port:
            # One address and port can be published once per node.
            if key in published:
                raise _Invalid(f"{path}.hostPort", f"{port.host_port}/{port.protocol} is"
                                                   f" already published by {published[key]}")
            published[key] = path
        else:
            # Publishing a port twice under different host ports is fine; the
            # same unpublished entry twice says nothing new and is a slip.
            key = (port.container_port, port.protocol)
            if key in declared:
                raise _Invalid(f"{path}.containerPort", f"{port.container_port}/{port.protocol}"
                                                        f" is already declared by {declared[key]}")
            declared[key] = path
        if port.name:
            _port_name(port, path, named, port_names)


def _port_name(port: types_pb2.Port, path: str, named: dict[str, str],
               port_names: dict[tuple[int, str], tuple[str, str]]) -> None:
    """A port's optional name: a DNS label, naming one service port of the workload."""
    _dns_label(port.name, f"{path}.name")
    if port.name in named:
        raise _Invalid(f"{path}.name", f"{quote(port.name)} already names {named[port.name]}")
    named[port.name] = path
    # Entries of one port published on two host ports are one service port:
    # it may not answer to two names.
    key = (port.container_port, port.protocol)
    if key in port_names:
        other, where = port_names[key]
        raise _Invalid(f"{path}.name", f"{port.container_port}/{port.protocol} is already"
                                       f" named {quote(other)} by {where}")
    port_names[key] = (port.name, path)


def _check_probe(check: types_pb2.HealthCheck, path: str) -> None:
    """A healthCheck or a readiness check: exec or tcpPort, a period and a threshold."""
    has_exec, has_tcp = bool(check.exec), check.tcp_port != 0
    if has_exec == has_tcp:
        raise _Invalid(path, "needs exactly one of exec or tcpPort, not "
                             + ("both" if has_exec else "neither"))
    if has_exec:
        _argv(check.exec, f"{path}.exec")
        _program(check.exec, f"{path}.exec")
    else:
        _in_range(check.tcp_port, f"{path}.tcpPort", 1, 65535)
    _in_range(check.period_seconds, f"{path}.periodSeconds", 1)
    _in_range(check.failure_threshold, f"{path}.failureThreshold", 1)


def _check_spec(s: types_pb2.WorkloadSpec, limits: Limits) -> None:
    cap = limits.max_replicas
    _in_range(s.replicas, "spec.replicas", 0, cap,
              " (the scheduler's --max-replicas)" if cap is not None else "")
    _check_image(s.image)
    _argv(s.command, "spec.command")
    _program(s.command, "spec.command")
    _argv(s.args, "spec.args")
    _check_env(s.env)
    if s.working_dir:
        _text(s.working_dir, "spec.workingDir", MAX_PATH_BYTES)
        _check(s.working_dir.startswith("/"), "spec.workingDir",
               f"{quote(s.working_dir)} is not an absolute path")
    if s.hostname:
        _dns_label(s.hostname, "spec.hostname")
    _check_resources(s.resources)
    _check_volumes(s)
    _check_ports(s.ports, limits.host_port_min)
    _one_of(s.restart_policy, "spec.restartPolicy", RESTART_POLICIES)
    if s.image_pull_policy:
        _one_of(s.image_pull_policy, "spec.imagePullPolicy", IMAGE_PULL_POLICIES)
    if s.image_pull_secret:
        _dns_label(s.image_pull_secret, "spec.imagePullSecret")
    if s.image_digest:
        # The server's to write; a client may send back what `get -o yaml` showed.
        _check(imageref.reference_problem(f"a.b/c@{s.image_digest}") is None,
               "status.imageDigest", f"{quote(s.image_digest)} is not sha256: and 64 hex digits")
    if s.HasField("health_check"):
        _check_probe(s.health_check, "spec.healthCheck")
    if s.HasField("readiness"):
        _check_probe(s.readiness, "spec.readiness")
    _labels(s.node_selector, "spec.nodeSelector")
    _in_range(s.update.max_unavailable, "spec.update.maxUnavailable", 0)
    _in_range(s.update.max_surge, "spec.update.maxSurge", 0)
    # Such an update could neither stop an old replica nor start a new one.
    _check(s.update.max_unavailable > 0 or s.update.max_surge > 0, "spec.update",
           "maxUnavailable and maxSurge must not both be 0")
    if s.security_context.seccomp_profile not in STORED_SECCOMP_PROFILES:
        raise _Invalid("spec.securityContext.seccompProfile",
                       f"must be RuntimeDefault (stored as \"\") or Unconfined, not"
                       f" {quote(s.security_context.seccomp_profile)}")


# ---------------------------------------------------------------------------
# The entry points


def workload_problem(workload: types_pb2.Workload,
                     limits: Limits = SERVER_LIMITS) -> FieldProblem | None:
    """The first problem with `workload`, or None when it may be stored."""
    try:
        size = workload.ByteSize()
        _check(size <= MAX_WORKLOAD_BYTES, "",
               f"is {size} bytes encoded; a workload may have at most {MAX_WORKLOAD_BYTES}")
        _check_metadata(workload.metadata)
        # The virtual IP is the scheduler's to give (from its --service-cidr,
        # claimed in etcd): a client that sends one is told, not ignored.
        _check(not workload.HasField("status"), "status",
               "is written by the scheduler (the virtual IP); leave it out")
        _check_spec(workload.spec, limits)
    except _Invalid as e:
        return e.found
    return None


def _name_in_request(workload: types_pb2.Workload, index: int) -> str:
    """How a message names a workload of a request: by namespace/name when they are names."""
    meta = workload.metadata
    if names.validate_dns_label(meta.name) or names.validate_dns_label(meta.namespace):
        return f"workloads[{index}]"
    return f"workload {meta.namespace}/{meta.name}"


def apply_problem(workloads: Sequence[types_pb2.Workload],
                  limits: Limits = SERVER_LIMITS) -> str | None:
    """The first problem with an apply of `workloads`, in one line, or None.

    Counts and sizes come first: they are cheap and bound the rest.
    """
    if len(workloads) > MAX_WORKLOADS_PER_APPLY:
        return (f"at most {MAX_WORKLOADS_PER_APPLY} workloads in one apply, not"
                f" {len(workloads)}: apply them in parts")
    size = sum(w.ByteSize() for w in workloads)
    if size > MAX_APPLY_BYTES:
        return (f"at most {MAX_APPLY_BYTES} bytes of workloads in one apply, not {size}:"
                " apply them in parts")
    first: dict[tuple[str, str], int] = {}
    for i, w in enumerate(workloads):
        if found := workload_problem(w, limits):
            return f"{_name_in_request(w, i)}: {found}"
        key = (w.metadata.namespace, w.metadata.name)
        if key in first:
            return (f"{_name_in_request(w, i)}: listed twice in one apply"
                    f" (workloads[{first[key]}] and workloads[{i}])")
        first[key] = i
    return None


def _object_problem(meta: types_pb2.ObjectMeta, keys: Sequence[str], size: int) -> None:
    _check(size <= MAX_OBJECT_BYTES, "",
           f"is {size} bytes encoded; at most {MAX_OBJECT_BYTES} (1Mi)")
    _check_metadata(meta)
    _count(keys, "data")
    for key in sorted(keys):
        if problem := key_problem(key):
            raise _Invalid("data", problem)


def config_problem(config: types_pb2.Config) -> FieldProblem | None:
    """The first problem with a Config, or None."""
    try:
        _object_problem(config.metadata, list(config.data), config.ByteSize())
    except _Invalid as e:
        return e.found
    return None


def secret_problem(secret: types_pb2.Secret) -> FieldProblem | None:
    """The first problem with a Secret, or None (never quoting a value)."""
    try:
        _object_problem(secret.metadata, list(secret.data), secret.ByteSize())
    except _Invalid as e:
        return e.found
    return None


def references(spec: types_pb2.WorkloadSpec, pull_secret: bool = True
               ) -> tuple[set[str], set[str], set[str]]:
    """The names of the Configs, Secrets and named volumes `spec` uses.

    The imagePullSecret counts (it cannot be deleted while named, its node
    gets it) unless `pull_secret` is False: a change of the registry's
    password must not roll running replicas (nor does it in Kubernetes).
    """
    configs: set[str] = set()
    secrets: set[str] = {spec.image_pull_secret} if pull_secret and spec.image_pull_secret \
        else set()
    volumes: set[str] = set()
    for var in spec.env:
        if var.HasField("value_from"):
            if var.value_from.config:
                configs.add(var.value_from.config)
            if var.value_from.secret:
                secrets.add(var.value_from.secret)
    for v in spec.volumes:
        source = v.WhichOneof("source")
        if source == "config":
            configs.add(v.config)
        elif source == "secret":
            secrets.add(v.secret)
        elif source == "volume":
            volumes.add(v.volume)
    return configs, secrets, volumes


def reference_problem(workload: types_pb2.Workload,
                      configs: Mapping[str, Sized], secrets: Mapping[str, Sized] | None
                      ) -> FieldProblem | None:
    """A Config or Secret that `workload` names and that does not exist (in its namespace).

    `configs` and `secrets` map each existing name to its keys; a key that
    env `valueFrom` names must be among them. Secrets None: not checked
    (the caller cannot see them).
    """
    s = workload.spec
    for i, v in enumerate(s.volumes):
        source = v.WhichOneof("source")
        if source == "config" and v.config not in configs:
            return FieldProblem(f"spec.volumes[{i}].config",
                                f"config {quote(v.config)} does not exist")
        if source == "secret" and secrets is not None and v.secret not in secrets:
            return FieldProblem(f"spec.volumes[{i}].secret",
                                f"secret {quote(v.secret)} does not exist")
    for i, var in enumerate(s.env):
        if not var.HasField("value_from"):
            continue
        ref = var.value_from
        kind, name = ("config", ref.config) if ref.config else ("secret", ref.secret)
        known = configs if kind == "config" else secrets
        if known is None:
            continue
        if name not in known:
            return FieldProblem(f"spec.env[{i}].valueFrom.{kind}",
                                f"{kind} {quote(name)} does not exist")
        if ref.key not in known[name]:  # type: ignore[operator]
            return FieldProblem(f"spec.env[{i}].valueFrom.key",
                                f"{kind} {quote(name)} has no key {quote(ref.key)}")
    pull = s.image_pull_secret
    if pull and secrets is not None:
        if pull not in secrets:
            return FieldProblem("spec.imagePullSecret", f"secret {quote(pull)} does not exist")
        shape = registryauth.shape_problem(set(secrets[pull]))  # type: ignore[call-overload]
        if shape is not None:
            return FieldProblem("spec.imagePullSecret", f"secret {quote(pull)} {shape}")
    return None


def objects_problem(configs: Sequence[types_pb2.Config],
                    secrets: Sequence[types_pb2.Secret], workload_bytes: int) -> str | None:
    """The first problem with the Configs and Secrets of an apply, in one line, or None."""
    if len(configs) + len(secrets) > MAX_OBJECTS_PER_APPLY:
        return (f"at most {MAX_OBJECTS_PER_APPLY} configs and secrets in one apply, not"
                f" {len(configs) + len(secrets)}: apply them in parts")
    size = workload_bytes + sum(c.ByteSize() for c in configs) + sum(
        x.ByteSize() for x in secrets)
    if size > MAX_REQUEST_BYTES:
        return (f"at most {MAX_REQUEST_BYTES} bytes in one apply, not {size}:"
                " apply them in parts")
    checked: list[tuple[str, list[tuple[types_pb2.ObjectMeta, FieldProblem | None]]]] = [
        ("config", [(c.metadata, config_problem(c)) for c in configs]),
        ("secret", [(x.metadata, secret_problem(x)) for x in secrets])]
    for kind, items in checked:
        first: dict[tuple[str, str], int] = {}
        for i, (meta, found) in enumerate(items):
            label = (f"{kind}s[{i}]" if names.validate_dns_label(meta.name)
                     or names.validate_dns_label(meta.namespace)
                     else f"{kind} {meta.namespace}/{meta.name}")
            if found is not None:
                return f"{label}: {found}"
            key = (meta.namespace, meta.name)
            if key in first:
                return f"{label}: listed twice in one apply"
            first[key] = i
    return None


def cluster_replicas_problem(desired: Mapping[tuple[str, str], int],
                             workloads: Sequence[types_pb2.Workload], cap: int) -> str | None:
    """Whether an apply of `workloads` keeps the cluster within `cap` replicas, in one line.

    `desired` is what every stored workload (less those being deleted) asks
    for now. An apply that does not add to the total always passes, so a
    cluster over a lowered cap can still be scaled down.
    """
    before = sum(desired.values())
    after = dict(desired)
    for w in workloads:
        after[(w.metadata.namespace, w.metadata.name)] = w.spec.replicas
    total = sum(after.values())
    if total <= cap or total <= before:
        return None
    return (f"the cluster may have at most {cap} replicas (the scheduler's"
            f" --max-cluster-replicas); this apply would make it {total}")

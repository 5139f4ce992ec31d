"""Workload files: YAML in, validated and defaulted `Workload` messages out.

A workload file (see SPEC.md, "The workload file") holds one or more YAML
documents, each an `apiVersion: mctl/v1` object of kind `Workload`, `Config`
(non-secret settings: `data`, a mapping of file names to text) or `Secret`
(the same shape, stored encrypted by the scheduler). An input
is a file, a directory of `*.yaml`/`*.yml` files or stdin, and it is accepted
or rejected as a whole: the first problem raises `SpecError`, naming the
file, the 1-based document index and the field path
(`app.yaml: document 2: spec.resources.memory: "64Mb" is not a quantity`),
and nothing is returned. Unknown fields and duplicate mapping keys are
errors, never silently dropped; so are values of the wrong type (`"3"` for
replicas, `8080` for an env value): nothing is coerced.

This module checks what only YAML can get wrong: fields, types, quantities,
numbers too large for the message. What a `Workload` message itself can get
wrong (ranges, choices, names, image references, duplicates, sizes) is
checked by common/validation.py, which the scheduler's Apply runs too; its
problems are reported here with the file and document like the others.

Every optional field comes back filled in with its default, so the rest of
mctl reads effective values and the spec hash does not change when a user
spells a default out. A null value means the field was left out. Defaults:

    metadata.namespace                 "default" (or the caller's default_namespace)
    spec.replicas                      1
    spec.resources.cpu                 250m  (resources are limits and also the
    spec.resources.memory              64Mi   placement request; each missing
    spec.resources.pids                256    key takes its own default)
    spec.resources.disk                none: 0 in the message, the node's default
                                       (mctl's extension; writable layer, /etc
                                       files and logs; not a placement request)
    spec.ports[].hostPort              0 (not published)
    spec.ports[].protocol              TCP
    spec.ports[].name                  none ("": the port has no name)
    spec.restartPolicy                 Always
    spec.imagePullPolicy               IfNotPresent (stored as ""; or Always: the tag is
                                       resolved again on every apply)
    spec.imagePullSecret               none
    spec.healthCheck                   none: `health_check` stays unset (HasField)
    spec.healthCheck.periodSeconds     10
    spec.healthCheck.failureThreshold  3
    spec.readiness                     none: `readiness` stays unset, and a replica
                                       is ready whenever it is Running
    spec.readiness.periodSeconds       10 (as healthCheck)
    spec.readiness.failureThreshold    3
    spec.spread                        true
    spec.replaceFailed                 false (mctl's extension: replace replicas that
                                       ended Failed under restartPolicy Never)
    spec.update                        maxUnavailable 1, maxSurge 1
    spec.securityContext               userNamespace false, readOnlyRootfs false,
                                       seccompProfile RuntimeDefault (mctl's extension:
                                       RuntimeDefault | Unconfined, docs/runtime.md;
                                       RuntimeDefault is stored as "")

`command`, `args`, `env`, `workingDir`, `hostname`, `ports` and
`nodeSelector` default to empty, meaning the image's own setting (or, for
hostname, the replica's name). `spec.image` has no default.

`metadata.uid`, `generation`, `createdUnixMs` and `deletionRequested` are
written by the server, as are `status.virtualIP` (the scheduler's, from its
--service-cidr) and `status.imageDigest` (the digest the image's tag was
resolved to on apply; stored as the spec's `image_digest`).
`workload_to_dict` shows them, so they are accepted in a file
(type-checked, then dropped) to let `mctl get -o yaml` output be applied
again, as with kubectl.
"""

import datetime
import io
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from mctl.common import boundedread, validation
from mctl.common.quantity import (
    QuantityError,
    format_cpu,
    format_memory,
    parse_cpu,
    parse_memory,
)
from mctl.common.sha256 import sha256
from mctl.v1 import types_pb2

API_VERSION = "mctl/v1"
KIND = "Workload"
CONFIG_KIND = "Config"
SECRET_KIND = "Secret"
KINDS = (KIND, CONFIG_KIND, SECRET_KIND)
# What a file may hold: one of these per document.
Object = types_pb2.Workload | types_pb2.Config | types_pb2.Secret

DEFAULT_NAMESPACE = "default"
# What `-f` reads at most, all files together: far more than any apply may
# send (validation.MAX_APPLY_BYTES), far less than would hurt the CLI.
MAX_INPUT_BYTES = 4 << 20
DEFAULT_REPLICAS = 1
DEFAULT_CPU_MILLIS = 250
DEFAULT_MEMORY_BYTES = 64 * 1024 * 1024
DEFAULT_PIDS = 256
DEFAULT_PROTOCOL = "TCP"
DEFAULT_RESTART_POLICY = "Always"
DEFAULT_IMAGE_PULL_POLICY = "IfNotPresent"
DEFAULT_PERIOD_SECONDS = 10
DEFAULT_FAILURE_THRESHOLD = 3
DEFAULT_MAX_UNAVAILABLE = 1
DEFAULT_MAX_SURGE = 1

# securityContext.seccompProfile: the agent's default profile, or none (as
# Kubernetes' seccompProfile.type; Localhost profiles are not supported).
SECCOMP_PROFILES = ("RuntimeDefault", "Unconfined")
DEFAULT_SECCOMP_PROFILE = "RuntimeDefault"

_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1
# A validation problem under spec.env as a list, when the file wrote a mapping.
_ENV_ENTRY = re.compile(r"\Aspec\.env\[(\d+)\]\.(name|value)\Z")
_SPEC_FIELDS = (
    "replicas image command args env workingDir hostname resources ports restartPolicy"
    " healthCheck readiness nodeSelector spread update securityContext replaceFailed"
    " volumes volumeMounts imagePullPolicy imagePullSecret"
).split()
# A volume's sources (exactly one per volume), in the file's names.
_VOLUME_SOURCES = ("volume", "emptyDir", "config", "secret", "hostPath")


class SpecError(Exception):
    """An input that is not a valid set of workloads.

    `source` is the file name as the user gave it (or "<stdin>"), `document`
    the 1-based YAML document index, `field` the dotted path in YAML names
    (`spec.ports[0].hostPort`); each is None when it does not apply.
    """

    def __init__(
        self,
        problem: str,
        *,
        source: str | None = None,
        document: int | None = None,
        field: str | None = None,
    ) -> None:
        self.source = source
        self.document = document
        self.field = field
        self.problem = problem
        parts = [
            source,
            None if document is None else f"document {document}",
            field,
            problem,
        ]
        super().__init__(": ".join(part for part in parts if part is not None))


class _Invalid(Exception):
    """A problem at a field of one document; becomes a SpecError with its place."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field or None  # "" is the document itself
        self.problem = problem


def _quote(value: object) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def _describe(value: object) -> str:
    """The bad value for a message: JSON-quoted if a plain scalar, else its kind."""
    if value is None or isinstance(value, str | int | float):
        return _quote(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a YAML {type(value).__name__}"  # date, datetime, bytes (!!binary), set


_child = validation.child


# ---------------------------------------------------------------------------
# Reading typed values out of the YAML tree


def _string(value: object, path: str) -> str:
    if not isinstance(value, str):
        # What YAML read as a number, boolean or date was meant as text.
        hint = " (quote it in YAML)" if isinstance(value, int | float | datetime.date) else ""
        raise _Invalid(path, f"must be a string, not {_describe(value)}{hint}")
    return value


def _string_list(value: object, path: str) -> list[str]:
    if not isinstance(value, list):
        raise _Invalid(path, f"must be a list of strings, not {_describe(value)}")
    return [_string(item, f"{path}[{i}]") for i, item in enumerate(value)]


def _int(value: object, path: str, maximum: int = _INT32_MAX, minimum: int | None = None) -> int:
    """An integer the message field can hold (int32 unless `maximum` says more).

    Ranges that matter are the validator's; `minimum` is for a 0 that the
    message could not tell from "not given".
    """
    # bool is an int subclass; `replicas: yes` is not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(path, f"must be an integer, not {_describe(value)}")
    if minimum is None:
        minimum = -maximum - 1
    if value < minimum:
        raise _Invalid(path, f"must be at least {minimum}, not {value}")
    if value > maximum:
        raise _Invalid(path, f"must be at most {maximum}, not {value}")
    return value


class _Mapping:
    """A YAML mapping at `path` that may hold only the `known` keys.

    The getters return the default for a missing or null key; without a
    default, such a key is "required".
    """

    def __init__(self, value: object, path: str, known: Iterable[str]) -> None:
        if not isinstance(value, dict):
            raise _Invalid(path, f"must be a mapping, not {_describe(value)}")
        known = set(known)
        for key in value:
            if key not in known:
                raise _Invalid(_child(path, key), "unknown field")
        self.value = value
        self.path = path

    def get(self, key: str, default: object) -> tuple[object, str]:
        """The value at `key` (or `default`) and its path."""
        path = _child(self.path, key)
        value = self.value.get(key)
        if value is None:
            if default is None:
                raise _Invalid(path, "required")
            return default, path
        return value, path

    def string(self, key: str, default: str | None = None) -> str:
        return _string(*self.get(key, default))

    def string_list(self, key: str) -> list[str]:
        return _string_list(*self.get(key, []))

    def integer(
        self, key: str, default: int | None, maximum: int = _INT32_MAX, minimum: int | None = None
    ) -> int:
        value, path = self.get(key, default)
        return _int(value, path, maximum, minimum)

    def boolean(self, key: str, default: bool) -> bool:
        value, path = self.get(key, default)
        if not isinstance(value, bool):
            raise _Invalid(path, f"must be true or false, not {_describe(value)}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value, path = self.get(key, default)
        if not isinstance(value, str) or value not in choices:
            raise _Invalid(path, f"must be one of {', '.join(choices)}, not {_describe(value)}")
        return value

    def mapping(self, key: str, known: Iterable[str], required: bool = False) -> "_Mapping":
        value, path = self.get(key, None if required else {})
        return _Mapping(value, path, known)

    def quantity(self, key: str, parse: Callable[[object], int], default: int) -> int:
        """A quantity in base units; `default` is in base units already."""
        value = self.value.get(key)
        if value is None:
            return default
        try:
            return parse(value)
        except QuantityError as e:
            raise _Invalid(_child(self.path, key), str(e)) from None

    def items(self, key: str) -> list[object]:
        value, path = self.get(key, [])
        if not isinstance(value, list):
            raise _Invalid(path, f"must be a list, not {_describe(value)}")
        return value

    def string_map(self, key: str) -> dict[str, str]:
        value, path = self.get(key, {})
        if not isinstance(value, dict):
            raise _Invalid(path, f"must be a mapping of strings, not {_describe(value)}")
        result = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _Invalid(path, f"key {_quote(k)} must be a string (quote it in YAML)")
            result[k] = _string(v, _child(path, k))
        return result


# ---------------------------------------------------------------------------
# One document


def _read_metadata(top: _Mapping, out: types_pb2.ObjectMeta, default_namespace: str) -> None:
    meta = top.mapping(
        "metadata",
        ["name", "namespace", "labels", "uid", "generation", "createdUnixMs", "deletionRequested"],
        required=True,
    )
    out.name = meta.string("name")
    out.namespace = meta.string("namespace", default_namespace)
    out.labels.update(meta.string_map("labels"))
    # Written by the server: checked, then dropped (see the module docstring).
    meta.string("uid", "")
    meta.integer("generation", 0, maximum=_INT64_MAX, minimum=0)
    meta.integer("createdUnixMs", 0, maximum=_INT64_MAX, minimum=0)
    meta.boolean("deletionRequested", False)


def _read_env(spec: _Mapping, out: types_pb2.WorkloadSpec) -> None:
    value = spec.value.get("env")
    if isinstance(value, dict):
        for name, v in spec.string_map("env").items():
            out.env.add(name=name, value=v)
        return
    if value is not None and not isinstance(value, list):
        raise _Invalid("spec.env", f"must be a mapping or a list, not {_describe(value)}")
    for i, item in enumerate(spec.items("env")):
        entry = _Mapping(item, f"spec.env[{i}]", ["name", "value", "valueFrom"])
        var = out.env.add(name=entry.string("name"), value=entry.string("value", ""))
        if entry.value.get("valueFrom") is not None:
            source = entry.mapping("valueFrom", ["config", "secret", "key"])
            var.value_from.config = source.string("config", "")
            var.value_from.secret = source.string("secret", "")
            var.value_from.key = source.string("key", "")
            if not (var.value_from.config or var.value_from.secret):
                # Empty in the message would read as "no valueFrom" for nothing.
                raise _Invalid(f"spec.env[{i}].valueFrom",
                               "needs exactly one of config or secret, not neither")


def _read_volumes(spec: _Mapping, out: types_pb2.WorkloadSpec) -> None:
    for i, item in enumerate(spec.items("volumes")):
        path = f"spec.volumes[{i}]"
        entry = _Mapping(item, path, ["name", *_VOLUME_SOURCES])
        given = [key for key in _VOLUME_SOURCES if entry.value.get(key) is not None]
        if len(given) != 1:
            which = " and ".join(given) if given else "neither"
            raise _Invalid(path, f"needs exactly one of {', '.join(_VOLUME_SOURCES)},"
                                 f" not {which}")
        volume = out.volumes.add(name=entry.string("name"))
        source = given[0]
        if source == "emptyDir":
            empty = entry.mapping("emptyDir", ["medium", "sizeLimit"])
            volume.empty_dir.medium = empty.string("medium", "")
            volume.empty_dir.size_limit_bytes = empty.quantity("sizeLimit", parse_memory, 0)
            written = empty.value.get("sizeLimit") is not None
            if volume.empty_dir.size_limit_bytes == 0 and written:
                raise _Invalid(f"{path}.emptyDir.sizeLimit",
                               "must be more than 0 (leave it out for no limit of its own)")
        elif source == "hostPath":
            volume.host_path.path = entry.mapping("hostPath", ["path"]).string("path")
        elif source == "volume":
            volume.volume = entry.string("volume")
        elif source == "config":
            volume.config = entry.string("config")
        else:
            volume.secret = entry.string("secret")
    for i, item in enumerate(spec.items("volumeMounts")):
        entry = _Mapping(item, f"spec.volumeMounts[{i}]", ["name", "mountPath", "readOnly"])
        mount = out.volume_mounts.add(name=entry.string("name"),
                                      mount_path=entry.string("mountPath"))
        if entry.value.get("readOnly") is not None:
            mount.read_only = entry.boolean("readOnly", False)


def _read_resources(spec: _Mapping, out: types_pb2.Resources) -> None:
    resources = spec.mapping("resources", ["cpu", "memory", "pids", "disk"])
    out.cpu_millis = resources.quantity("cpu", parse_cpu, DEFAULT_CPU_MILLIS)
    out.memory_bytes = resources.quantity("memory", parse_memory, DEFAULT_MEMORY_BYTES)
    out.pids = resources.integer("pids", DEFAULT_PIDS, maximum=_INT64_MAX)
    # The default is the node's, so it stays 0 here: left out, the field keeps
    # every older workload's spec hash (no rollout on upgrade).
    out.disk_bytes = resources.quantity("disk", parse_memory, 0)
    if out.disk_bytes == 0 and resources.value.get("disk") is not None:
        # In the message 0 is "not given"; a written 0 is no limit the node could keep.
        raise _Invalid("spec.resources.disk",
                       "must be more than 0 (leave it out for the node's default)")


def _read_ports(spec: _Mapping, out: types_pb2.WorkloadSpec) -> None:
    for i, item in enumerate(spec.items("ports")):
        port = _Mapping(item, f"spec.ports[{i}]",
                        ["containerPort", "hostPort", "protocol", "name"])
        out.ports.add(container_port=port.integer("containerPort", None),
                      host_port=port.integer("hostPort", 0),
                      protocol=port.string("protocol", DEFAULT_PROTOCOL),
                      name=port.string("name", ""))


def _read_probe(spec: _Mapping, key: str, out: types_pb2.HealthCheck) -> None:
    """spec.healthCheck or spec.readiness into `out`; left unset when the file has none."""
    if spec.value.get(key) is None:
        return  # no check: the field stays unset (HasField)
    path = f"spec.{key}"
    check = spec.mapping(key, ["exec", "tcpPort", "periodSeconds", "failureThreshold"])
    has_exec = check.value.get("exec") is not None
    has_tcp = check.value.get("tcpPort") is not None
    if has_exec == has_tcp:
        which = "both" if has_exec else "neither"
        raise _Invalid(path, f"needs exactly one of exec or tcpPort, not {which}")
    out.SetInParent()
    # An empty exec or a tcpPort of 0 would read as "not given" in the message.
    if has_exec:
        command = check.string_list("exec")
        if not command:
            raise _Invalid(f"{path}.exec", "must not be empty")
        out.exec.extend(command)
    else:
        out.tcp_port = check.integer("tcpPort", None, minimum=1)
    out.period_seconds = check.integer("periodSeconds", DEFAULT_PERIOD_SECONDS)
    out.failure_threshold = check.integer("failureThreshold", DEFAULT_FAILURE_THRESHOLD)


def _read_spec(top: _Mapping, out: types_pb2.WorkloadSpec) -> None:
    spec = top.mapping("spec", _SPEC_FIELDS, required=True)
    out.replicas = spec.integer("replicas", DEFAULT_REPLICAS)
    out.image = spec.string("image")
    # IfNotPresent, the default, is stored as "": older workloads keep their spec hash.
    policy = spec.string("imagePullPolicy", "")
    out.image_pull_policy = "" if policy == DEFAULT_IMAGE_PULL_POLICY else policy
    out.image_pull_secret = spec.string("imagePullSecret", "")
    out.command.extend(spec.string_list("command"))
    out.args.extend(spec.string_list("args"))
    _read_env(spec, out)
    out.working_dir = spec.string("workingDir", "")
    out.hostname = spec.string("hostname", "")
    _read_resources(spec, out.resources)
    _read_ports(spec, out)
    _read_volumes(spec, out)
    out.restart_policy = spec.string("restartPolicy", DEFAULT_RESTART_POLICY)
    _read_probe(spec, "healthCheck", out.health_check)
    _read_probe(spec, "readiness", out.readiness)
    out.node_selector.update(spec.string_map("nodeSelector"))
    out.spread = spec.boolean("spread", True)
    out.replace_failed = spec.boolean("replaceFailed", False)
    update = spec.mapping("update", ["maxUnavailable", "maxSurge"])
    out.update.max_unavailable = update.integer("maxUnavailable", DEFAULT_MAX_UNAVAILABLE)
    out.update.max_surge = update.integer("maxSurge", DEFAULT_MAX_SURGE)
    security = spec.mapping("securityContext",
                            ["userNamespace", "readOnlyRootfs", "seccompProfile"])
    out.security_context.user_namespace = security.boolean("userNamespace", False)
    out.security_context.read_only_rootfs = security.boolean("readOnlyRootfs", False)
    seccomp = security.choice("seccompProfile", SECCOMP_PROFILES, DEFAULT_SECCOMP_PROFILE)
    # The default is stored as "" so that the spec hash of every workload
    # written before the field existed stays what it was (no rollout on upgrade).
    out.security_context.seccomp_profile = "" if seccomp == DEFAULT_SECCOMP_PROFILE else seccomp


def _read_document(document: object, default_namespace: str) -> Object:
    """A Workload, Config or Secret, by the document's kind."""
    kind = document.get("kind") if isinstance(document, dict) else None
    if kind in (CONFIG_KIND, SECRET_KIND):
        return _read_data_object(document, str(kind), default_namespace)
    return _read_workload(document, default_namespace)


def _read_data_object(document: object, kind: str,
                      default_namespace: str) -> types_pb2.Config | types_pb2.Secret:
    top = _Mapping(document, "", ["apiVersion", "kind", "metadata", "data"])
    value, path = top.get("apiVersion", None)
    if value != API_VERSION:
        raise _Invalid(path, f"must be {_quote(API_VERSION)}, not {_describe(value)}")
    obj: types_pb2.Config | types_pb2.Secret
    if kind == CONFIG_KIND:
        config = types_pb2.Config()
        _read_metadata(top, config.metadata, default_namespace)
        config.data.update(top.string_map("data"))
        found = validation.config_problem(config)
        obj = config
    else:
        secret = types_pb2.Secret()
        _read_metadata(top, secret.metadata, default_namespace)
        data = top.value.get("data")
        if data is not None and not isinstance(data, dict):
            raise _Invalid("data", f"must be a mapping of strings, not {_describe(data)}")
        for k, v in (data or {}).items():
            if not isinstance(k, str):
                raise _Invalid("data", f"key {_quote(k)} must be a string (quote it in YAML)")
            if not isinstance(v, str):
                # Never quote the value: it is a secret.
                raise _Invalid(_child("data", k), "must be a string")
            secret.data[k] = v.encode()
        found = validation.secret_problem(secret)
        obj = secret
    if found is not None:
        raise _Invalid(found.field, found.problem)
    return obj


def _read_workload(document: object, default_namespace: str) -> types_pb2.Workload:
    top = _Mapping(document, "", ["apiVersion", "kind", "metadata", "spec", "status"])
    for key, expected in [("apiVersion", API_VERSION), ("kind", KIND)]:
        value, path = top.get(key, None)
        if key == "kind" and value != expected:
            raise _Invalid(path, f"must be one of {', '.join(KINDS)}, not {_describe(value)}")
        if value != expected:
            raise _Invalid(path, f"must be {_quote(expected)}, not {_describe(value)}")
    workload = types_pb2.Workload()
    _read_metadata(top, workload.metadata, default_namespace)
    _read_spec(top, workload.spec)
    # Written by the scheduler: checked, then dropped (see the module docstring).
    status = top.mapping("status", ["virtualIP", "imageDigest"])
    status.string("virtualIP", "")
    status.string("imageDigest", "")
    found = validation.workload_problem(workload, validation.CLIENT_LIMITS)
    if found is not None:
        raise _Invalid(_file_field(found.field, top.value, workload), found.problem)
    return workload


def _file_field(field: str, document: dict[Any, Any], workload: types_pb2.Workload) -> str:
    """A validation problem's field in the file's terms.

    The message keeps env as a list; a file that wrote it as a mapping has
    each name as a key, so a bad name is a problem of the mapping (as a bad
    label key is) and a bad value sits under its name.
    """
    match = _ENV_ENTRY.match(field)
    if match is None or not isinstance(document["spec"].get("env"), dict):
        return field
    if match[2] == "name":
        return "spec.env"
    return _child("spec.env", workload.spec.env[int(match[1])].name)


# ---------------------------------------------------------------------------
# Inputs


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The safe loader (libyaml when available) that also rejects duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            # Merge keys ("<<") may legitimately repeat what they merge.
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)
                if key in seen:
                    raise ConstructorError(
                        None, None, f"duplicate key {_quote(key)}", key_node.start_mark
                    )
                seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep)
        return mapping


def _yaml_problem(error: yaml.YAMLError) -> str:
    if not isinstance(error, yaml.MarkedYAMLError) or error.problem_mark is None:
        return f"invalid YAML: {str(error).splitlines()[0]}"
    mark = error.problem_mark
    return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {error.problem}"


def _documents(text: str, source: str) -> Iterator[tuple[int, object]]:
    """(1-based index, data) for each YAML document; None for an empty one."""
    index = 1
    try:
        # This is yaml.safe_load_all, with the loader above.
        for data in yaml.load_all(text, Loader=_Loader):
            yield index, data
            index += 1
    except yaml.YAMLError as e:
        raise SpecError(_yaml_problem(e), source=source, document=index) from None
    except RecursionError:  # only the pure-Python parser; libyaml has a depth limit
        raise SpecError("invalid YAML: nested too deeply", source=source, document=index) from None


def kind_of(obj: Object) -> str:
    if isinstance(obj, types_pb2.Config):
        return CONFIG_KIND
    if isinstance(obj, types_pb2.Secret):
        return SECRET_KIND
    return KIND


def _parse_inputs(
    inputs: Iterable[tuple[str, str]], default_namespace: str
) -> list[tuple[str, Object]]:
    result: list[tuple[str, Object]] = []
    first_seen: dict[tuple[str, str, str], str] = {}
    for source, text in inputs:
        for index, document in _documents(text, source):
            if document is None:
                continue
            try:
                obj = _read_document(document, default_namespace)
            except _Invalid as e:
                raise SpecError(e.problem, source=source, document=index, field=e.field) from None
            kind = kind_of(obj)
            key = (kind, obj.metadata.namespace, obj.metadata.name)
            if key in first_seen:
                raise SpecError(
                    f"{kind.lower()} {_quote(key[2])} in namespace {_quote(key[1])} is already"
                    f" declared in {first_seen[key]}",
                    source=source,
                    document=index,
                    field="metadata.name",
                )
            first_seen[key] = f"{source}, document {index}"
            result.append((source, obj))
    return result


def parse_documents(
    text: str, source: str, *, default_namespace: str = DEFAULT_NAMESPACE
) -> list[types_pb2.Workload]:
    """The workloads in a YAML string; `source` names it in errors. May be empty."""
    return [obj for _, obj in _parse_inputs([(source, text)], default_namespace)
            if isinstance(obj, types_pb2.Workload)]


def parse_objects(
    text: str, source: str, *, default_namespace: str = DEFAULT_NAMESPACE
) -> list[Object]:
    """Every Workload, Config and Secret in a YAML string, in file order."""
    return [obj for _, obj in _parse_inputs([(source, text)], default_namespace)]


def _read_stdin(limit: int) -> bytes:
    """At most `limit` bytes of stdin (waiting as long as it takes: a person may type)."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        # Not a file (a test's StringIO, an embedding's stream): read it as text.
        data = sys.stdin.read(limit + 1).encode()
        if len(data) > limit:
            raise boundedread.TooLarge(f"larger than {boundedread.describe(limit)}") from None
        return data
    return boundedread.read_fd(fd, limit, idle_seconds=None)


def _read_inputs(path: str) -> Iterator[tuple[str, str]]:
    """(source, text) for a file, each YAML file of a directory, or "-" (stdin).

    At most MAX_INPUT_BYTES in all are read (boundedread.py: /dev/zero, a
    FIFO that never ends or a directory of huge files cost no more).
    """
    if path == "-":
        sources = ["<stdin>"]
    elif os.path.isdir(path):
        try:
            entries = sorted(os.listdir(path))
        except OSError as e:
            raise SpecError(f"cannot read: {(e.strerror or str(e)).lower()}",
                            source=path) from None
        sources = [
            os.path.join(path, name)
            for name in entries
            if name.endswith((".yaml", ".yml")) and os.path.isfile(os.path.join(path, name))
        ]
        if not sources:
            raise SpecError("directory has no *.yaml or *.yml files", source=path)
    else:
        sources = [path]
    left = MAX_INPUT_BYTES
    for source in sources:
        try:
            if source == "<stdin>":
                data = _read_stdin(left)
            else:
                data = boundedread.read_path(source, left)
            left -= len(data)
            yield source, data.decode("utf-8")
        except boundedread.TooLarge:
            limit = boundedread.describe(MAX_INPUT_BYTES)
            raise SpecError(f"larger than {limit}" if len(sources) == 1 else
                            f"more than {limit} of YAML in all", source=source) from None
        except boundedread.Stalled as e:
            raise SpecError(f"cannot read: {e}", source=source) from None
        except OSError as e:
            problem = (e.strerror or str(e)).lower()
            raise SpecError(f"cannot read: {problem}", source=source) from None
        except UnicodeDecodeError as e:
            raise SpecError(f"not UTF-8 text (byte {e.start})", source=source) from None


def load_objects(
    path: str, *, default_namespace: str = DEFAULT_NAMESPACE
) -> list[tuple[str, Object]]:
    """(source, object) for every Workload, Config and Secret of an input.

    The whole input is read and validated first; any problem raises SpecError.
    An input with nothing in it is an error too (nothing to apply).
    """
    result = _parse_inputs(_read_inputs(path), default_namespace)
    if not result:
        raise SpecError("no workloads, configs or secrets found",
                        source="<stdin>" if path == "-" else path)
    return result


def load_path(
    path: str, *, default_namespace: str = DEFAULT_NAMESPACE
) -> list[tuple[str, types_pb2.Workload]]:
    """(source, workload) for the workloads of a file, a directory or "-" (stdin).

    The whole input is read and validated first; any problem raises SpecError.
    An input with no workloads at all is an error too (nothing to apply).
    """
    result = [(source, obj) for source, obj in _parse_inputs(_read_inputs(path),
                                                              default_namespace)
              if isinstance(obj, types_pb2.Workload)]
    if not result:
        raise SpecError("no workloads found", source="<stdin>" if path == "-" else path)
    return result


# ---------------------------------------------------------------------------
# Output and hashing


def spec_hash(spec: types_pb2.WorkloadSpec) -> str:
    """12 hex digits identifying what a replica runs: the spec minus replicas and update.

    Scaling or changing the update strategy leaves running replicas alone;
    any other change makes new ones.
    """
    container = types_pb2.WorkloadSpec()
    container.CopyFrom(spec)
    container.ClearField("replicas")
    container.ClearField("update")
    return sha256(container.SerializeToString(deterministic=True)).hexdigest()[:12]


def workload_to_dict(workload: types_pb2.Workload) -> dict[str, Any]:
    """The workload as a YAML-shaped dict (SPEC.md field names), for `-o yaml|json`.

    Effective values are shown, defaults included; empty optional fields are
    left out. Parsing the result gives back the same workload (less the
    server-written metadata). Dump with `sort_keys=False` to keep this order.
    """
    meta = workload.metadata
    metadata: dict[str, Any] = {"name": meta.name, "namespace": meta.namespace}
    if meta.labels:
        metadata["labels"] = dict(sorted(meta.labels.items()))
    for key, value in [
        ("uid", meta.uid),
        ("generation", meta.generation),
        ("createdUnixMs", meta.created_unix_ms),
        ("deletionRequested", meta.deletion_requested),
    ]:
        if value:
            metadata[key] = value

    s = workload.spec
    spec: dict[str, Any] = {"replicas": s.replicas, "image": s.image}
    if s.command:
        spec["command"] = list(s.command)
    if s.args:
        spec["args"] = list(s.args)
    if s.env and any(var.HasField("value_from") for var in s.env):
        spec["env"] = [_env_entry(var) for var in s.env]
    elif s.env:
        spec["env"] = {var.name: var.value for var in s.env}
    if s.working_dir:
        spec["workingDir"] = s.working_dir
    if s.hostname:
        spec["hostname"] = s.hostname
    spec["resources"] = {
        "cpu": format_cpu(s.resources.cpu_millis),
        "memory": format_memory(s.resources.memory_bytes),
        "pids": s.resources.pids,
    }
    if s.resources.disk_bytes:
        spec["resources"]["disk"] = format_memory(s.resources.disk_bytes)
    if s.ports:
        spec["ports"] = []
        for p in s.ports:
            port: dict[str, Any] = {"name": p.name} if p.name else {}
            port["containerPort"] = p.container_port
            if p.host_port:
                port["hostPort"] = p.host_port
            port["protocol"] = p.protocol
            spec["ports"].append(port)
    if s.volumes:
        spec["volumes"] = [_volume_entry(v) for v in s.volumes]
    if s.volume_mounts:
        spec["volumeMounts"] = []
        for m in s.volume_mounts:
            mount: dict[str, Any] = {"name": m.name, "mountPath": m.mount_path}
            if m.HasField("read_only"):
                mount["readOnly"] = m.read_only
            spec["volumeMounts"].append(mount)
    if s.image_pull_policy:
        spec["imagePullPolicy"] = s.image_pull_policy
    if s.image_pull_secret:
        spec["imagePullSecret"] = s.image_pull_secret
    spec["restartPolicy"] = s.restart_policy
    for key, field in (("healthCheck", "health_check"), ("readiness", "readiness")):
        if s.HasField(field):
            check = getattr(s, field)
            probe = {"exec": list(check.exec)} if check.exec else {"tcpPort": check.tcp_port}
            spec[key] = probe | {
                "periodSeconds": check.period_seconds,
                "failureThreshold": check.failure_threshold,
            }
    if s.node_selector:
        spec["nodeSelector"] = dict(sorted(s.node_selector.items()))
    spec["spread"] = s.spread
    if s.replace_failed:
        spec["replaceFailed"] = True
    spec["update"] = {"maxUnavailable": s.update.max_unavailable, "maxSurge": s.update.max_surge}
    spec["securityContext"] = {
        "userNamespace": s.security_context.user_namespace,
        "readOnlyRootfs": s.security_context.read_only_rootfs,
        "seccompProfile": s.security_context.seccomp_profile or DEFAULT_SECCOMP_PROFILE,
    }
    doc = {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}
    status: dict[str, Any] = {}
    if workload.status.virtual_ip:
        status["virtualIP"] = workload.status.virtual_ip
    if s.image_digest:
        # Kept in the spec (so it is part of the spec hash), shown as status: the server's.
        status["imageDigest"] = s.image_digest
    if status:
        doc["status"] = status
    return doc


def _env_entry(var: types_pb2.EnvVar) -> dict[str, Any]:
    if not var.HasField("value_from"):
        return {"name": var.name, "value": var.value}
    ref = var.value_from
    source = {"config": ref.config} if ref.config else {"secret": ref.secret}
    return {"name": var.name, "valueFrom": source | {"key": ref.key}}


def _volume_entry(v: types_pb2.Volume) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": v.name}
    source = v.WhichOneof("source")
    if source == "empty_dir":
        empty: dict[str, Any] = {}
        if v.empty_dir.medium:
            empty["medium"] = v.empty_dir.medium
        if v.empty_dir.size_limit_bytes:
            empty["sizeLimit"] = format_memory(v.empty_dir.size_limit_bytes)
        entry["emptyDir"] = empty
    elif source == "host_path":
        entry["hostPath"] = {"path": v.host_path.path}
    elif source is not None:
        entry[source] = getattr(v, source)
    return entry


def _object_metadata(meta: types_pb2.ObjectMeta) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": meta.name, "namespace": meta.namespace}
    if meta.labels:
        metadata["labels"] = dict(sorted(meta.labels.items()))
    for key, value in [("uid", meta.uid), ("generation", meta.generation),
                       ("createdUnixMs", meta.created_unix_ms)]:
        if value:
            metadata[key] = value
    return metadata


def config_to_dict(config: types_pb2.Config) -> dict[str, Any]:
    """A Config as a YAML-shaped dict, which applies again as it is."""
    return {"apiVersion": API_VERSION, "kind": CONFIG_KIND,
            "metadata": _object_metadata(config.metadata),
            "data": dict(sorted(config.data.items()))}


def secret_summary_to_dict(meta: types_pb2.ObjectMeta, keys: Iterable[str]) -> dict[str, Any]:
    """A Secret as lists show it: its name and keys, never a value."""
    return {"apiVersion": API_VERSION, "kind": SECRET_KIND,
            "metadata": _object_metadata(meta), "keys": sorted(keys)}

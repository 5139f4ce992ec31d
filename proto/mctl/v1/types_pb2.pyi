from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReplicaPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPLICA_PHASE_UNSPECIFIED: _ClassVar[ReplicaPhase]
    REPLICA_PHASE_PENDING: _ClassVar[ReplicaPhase]
    REPLICA_PHASE_STARTING: _ClassVar[ReplicaPhase]
    REPLICA_PHASE_RUNNING: _ClassVar[ReplicaPhase]
    REPLICA_PHASE_SUCCEEDED: _ClassVar[ReplicaPhase]
    REPLICA_PHASE_FAILED: _ClassVar[ReplicaPhase]
    REPLICA_PHASE_TERMINATING: _ClassVar[ReplicaPhase]

class ReplicaReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPLICA_REASON_UNSPECIFIED: _ClassVar[ReplicaReason]
    REPLICA_REASON_UNSCHEDULABLE: _ClassVar[ReplicaReason]
    REPLICA_REASON_DRAINED: _ClassVar[ReplicaReason]
    REPLICA_REASON_NODE_NOT_READY: _ClassVar[ReplicaReason]
    REPLICA_REASON_COMPLETED: _ClassVar[ReplicaReason]
    REPLICA_REASON_ERROR: _ClassVar[ReplicaReason]
    REPLICA_REASON_OOM_KILLED: _ClassVar[ReplicaReason]
    REPLICA_REASON_UNHEALTHY: _ClassVar[ReplicaReason]
    REPLICA_REASON_START_ERROR: _ClassVar[ReplicaReason]
    REPLICA_REASON_MONITOR_LOST: _ClassVar[ReplicaReason]
    REPLICA_REASON_CRASH_LOOP_BACK_OFF: _ClassVar[ReplicaReason]
    REPLICA_REASON_CREATE_ERROR: _ClassVar[ReplicaReason]
    REPLICA_REASON_DISK_LIMIT: _ClassVar[ReplicaReason]
    REPLICA_REASON_IMAGE_PULL_ERROR: _ClassVar[ReplicaReason]
REPLICA_PHASE_UNSPECIFIED: ReplicaPhase
REPLICA_PHASE_PENDING: ReplicaPhase
REPLICA_PHASE_STARTING: ReplicaPhase
REPLICA_PHASE_RUNNING: ReplicaPhase
REPLICA_PHASE_SUCCEEDED: ReplicaPhase
REPLICA_PHASE_FAILED: ReplicaPhase
REPLICA_PHASE_TERMINATING: ReplicaPhase
REPLICA_REASON_UNSPECIFIED: ReplicaReason
REPLICA_REASON_UNSCHEDULABLE: ReplicaReason
REPLICA_REASON_DRAINED: ReplicaReason
REPLICA_REASON_NODE_NOT_READY: ReplicaReason
REPLICA_REASON_COMPLETED: ReplicaReason
REPLICA_REASON_ERROR: ReplicaReason
REPLICA_REASON_OOM_KILLED: ReplicaReason
REPLICA_REASON_UNHEALTHY: ReplicaReason
REPLICA_REASON_START_ERROR: ReplicaReason
REPLICA_REASON_MONITOR_LOST: ReplicaReason
REPLICA_REASON_CRASH_LOOP_BACK_OFF: ReplicaReason
REPLICA_REASON_CREATE_ERROR: ReplicaReason
REPLICA_REASON_DISK_LIMIT: ReplicaReason
REPLICA_REASON_IMAGE_PULL_ERROR: ReplicaReason

class Resources(_message.Message):
    __slots__ = ("cpu_millis", "memory_bytes", "pids", "disk_bytes")
    CPU_MILLIS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    PIDS_FIELD_NUMBER: _ClassVar[int]
    DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    cpu_millis: int
    memory_bytes: int
    pids: int
    disk_bytes: int
    def __init__(self, cpu_millis: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., pids: _Optional[int] = ..., disk_bytes: _Optional[int] = ...) -> None: ...

class EnvVar(_message.Message):
    __slots__ = ("name", "value", "value_from")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FROM_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    value_from: EnvSource
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ..., value_from: _Optional[_Union[EnvSource, _Mapping]] = ...) -> None: ...

class EnvSource(_message.Message):
    __slots__ = ("config", "secret", "key")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    config: str
    secret: str
    key: str
    def __init__(self, config: _Optional[str] = ..., secret: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class Volume(_message.Message):
    __slots__ = ("name", "volume", "empty_dir", "config", "secret", "host_path")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    EMPTY_DIR_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    HOST_PATH_FIELD_NUMBER: _ClassVar[int]
    name: str
    volume: str
    empty_dir: EmptyDir
    config: str
    secret: str
    host_path: HostPath
    def __init__(self, name: _Optional[str] = ..., volume: _Optional[str] = ..., empty_dir: _Optional[_Union[EmptyDir, _Mapping]] = ..., config: _Optional[str] = ..., secret: _Optional[str] = ..., host_path: _Optional[_Union[HostPath, _Mapping]] = ...) -> None: ...

class EmptyDir(_message.Message):
    __slots__ = ("medium", "size_limit_bytes")
    MEDIUM_FIELD_NUMBER: _ClassVar[int]
    SIZE_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    medium: str
    size_limit_bytes: int
    def __init__(self, medium: _Optional[str] = ..., size_limit_bytes: _Optional[int] = ...) -> None: ...

class HostPath(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class VolumeMount(_message.Message):
    __slots__ = ("name", "mount_path", "read_only")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MOUNT_PATH_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    name: str
    mount_path: str
    read_only: bool
    def __init__(self, name: _Optional[str] = ..., mount_path: _Optional[str] = ..., read_only: _Optional[bool] = ...) -> None: ...

class Config(_message.Message):
    __slots__ = ("metadata", "data")
    class DataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    METADATA_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    metadata: ObjectMeta
    data: _containers.ScalarMap[str, str]
    def __init__(self, metadata: _Optional[_Union[ObjectMeta, _Mapping]] = ..., data: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Secret(_message.Message):
    __slots__ = ("metadata", "data")
    class DataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    METADATA_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    metadata: ObjectMeta
    data: _containers.ScalarMap[str, bytes]
    def __init__(self, metadata: _Optional[_Union[ObjectMeta, _Mapping]] = ..., data: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class VolumeRecord(_message.Message):
    __slots__ = ("metadata", "node", "lost", "used_bytes", "users")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    metadata: ObjectMeta
    node: str
    lost: bool
    used_bytes: int
    users: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, metadata: _Optional[_Union[ObjectMeta, _Mapping]] = ..., node: _Optional[str] = ..., lost: _Optional[bool] = ..., used_bytes: _Optional[int] = ..., users: _Optional[_Iterable[str]] = ...) -> None: ...

class Port(_message.Message):
    __slots__ = ("container_port", "host_port", "protocol", "name")
    CONTAINER_PORT_FIELD_NUMBER: _ClassVar[int]
    HOST_PORT_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    container_port: int
    host_port: int
    protocol: str
    name: str
    def __init__(self, container_port: _Optional[int] = ..., host_port: _Optional[int] = ..., protocol: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class HealthCheck(_message.Message):
    __slots__ = ("exec", "tcp_port", "period_seconds", "failure_threshold")
    EXEC_FIELD_NUMBER: _ClassVar[int]
    TCP_PORT_FIELD_NUMBER: _ClassVar[int]
    PERIOD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    exec: _containers.RepeatedScalarFieldContainer[str]
    tcp_port: int
    period_seconds: int
    failure_threshold: int
    def __init__(self, exec: _Optional[_Iterable[str]] = ..., tcp_port: _Optional[int] = ..., period_seconds: _Optional[int] = ..., failure_threshold: _Optional[int] = ...) -> None: ...

class UpdateStrategy(_message.Message):
    __slots__ = ("max_unavailable", "max_surge")
    MAX_UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    MAX_SURGE_FIELD_NUMBER: _ClassVar[int]
    max_unavailable: int
    max_surge: int
    def __init__(self, max_unavailable: _Optional[int] = ..., max_surge: _Optional[int] = ...) -> None: ...

class SecurityContext(_message.Message):
    __slots__ = ("user_namespace", "read_only_rootfs", "seccomp_profile")
    USER_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_ROOTFS_FIELD_NUMBER: _ClassVar[int]
    SECCOMP_PROFILE_FIELD_NUMBER: _ClassVar[int]
    user_namespace: bool
    read_only_rootfs: bool
    seccomp_profile: str
    def __init__(self, user_namespace: _Optional[bool] = ..., read_only_rootfs: _Optional[bool] = ..., seccomp_profile: _Optional[str] = ...) -> None: ...

class WorkloadSpec(_message.Message):
    __slots__ = ("replicas", "image", "command", "args", "env", "working_dir", "hostname", "resources", "ports", "restart_policy", "health_check", "node_selector", "spread", "update", "security_context", "replace_failed", "readiness", "volumes", "volume_mounts", "image_pull_policy", "image_pull_secret", "image_digest", "restarted_at_unix_ms")
    class NodeSelectorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    WORKING_DIR_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    RESTART_POLICY_FIELD_NUMBER: _ClassVar[int]
    HEALTH_CHECK_FIELD_NUMBER: _ClassVar[int]
    NODE_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    SPREAD_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    SECURITY_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FAILED_FIELD_NUMBER: _ClassVar[int]
    READINESS_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    VOLUME_MOUNTS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_PULL_POLICY_FIELD_NUMBER: _ClassVar[int]
    IMAGE_PULL_SECRET_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    RESTARTED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    replicas: int
    image: str
    command: _containers.RepeatedScalarFieldContainer[str]
    args: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.RepeatedCompositeFieldContainer[EnvVar]
    working_dir: str
    hostname: str
    resources: Resources
    ports: _containers.RepeatedCompositeFieldContainer[Port]
    restart_policy: str
    health_check: HealthCheck
    node_selector: _containers.ScalarMap[str, str]
    spread: bool
    update: UpdateStrategy
    security_context: SecurityContext
    replace_failed: bool
    readiness: HealthCheck
    volumes: _containers.RepeatedCompositeFieldContainer[Volume]
    volume_mounts: _containers.RepeatedCompositeFieldContainer[VolumeMount]
    image_pull_policy: str
    image_pull_secret: str
    image_digest: str
    restarted_at_unix_ms: int
    def __init__(self, replicas: _Optional[int] = ..., image: _Optional[str] = ..., command: _Optional[_Iterable[str]] = ..., args: _Optional[_Iterable[str]] = ..., env: _Optional[_Iterable[_Union[EnvVar, _Mapping]]] = ..., working_dir: _Optional[str] = ..., hostname: _Optional[str] = ..., resources: _Optional[_Union[Resources, _Mapping]] = ..., ports: _Optional[_Iterable[_Union[Port, _Mapping]]] = ..., restart_policy: _Optional[str] = ..., health_check: _Optional[_Union[HealthCheck, _Mapping]] = ..., node_selector: _Optional[_Mapping[str, str]] = ..., spread: _Optional[bool] = ..., update: _Optional[_Union[UpdateStrategy, _Mapping]] = ..., security_context: _Optional[_Union[SecurityContext, _Mapping]] = ..., replace_failed: _Optional[bool] = ..., readiness: _Optional[_Union[HealthCheck, _Mapping]] = ..., volumes: _Optional[_Iterable[_Union[Volume, _Mapping]]] = ..., volume_mounts: _Optional[_Iterable[_Union[VolumeMount, _Mapping]]] = ..., image_pull_policy: _Optional[str] = ..., image_pull_secret: _Optional[str] = ..., image_digest: _Optional[str] = ..., restarted_at_unix_ms: _Optional[int] = ...) -> None: ...

class ObjectMeta(_message.Message):
    __slots__ = ("name", "namespace", "labels", "uid", "generation", "created_unix_ms", "deletion_requested")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    DELETION_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    name: str
    namespace: str
    labels: _containers.ScalarMap[str, str]
    uid: str
    generation: int
    created_unix_ms: int
    deletion_requested: bool
    def __init__(self, name: _Optional[str] = ..., namespace: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., uid: _Optional[str] = ..., generation: _Optional[int] = ..., created_unix_ms: _Optional[int] = ..., deletion_requested: _Optional[bool] = ...) -> None: ...

class Workload(_message.Message):
    __slots__ = ("metadata", "spec", "status")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    metadata: ObjectMeta
    spec: WorkloadSpec
    status: WorkloadStatus
    def __init__(self, metadata: _Optional[_Union[ObjectMeta, _Mapping]] = ..., spec: _Optional[_Union[WorkloadSpec, _Mapping]] = ..., status: _Optional[_Union[WorkloadStatus, _Mapping]] = ...) -> None: ...

class WorkloadStatus(_message.Message):
    __slots__ = ("virtual_ip",)
    VIRTUAL_IP_FIELD_NUMBER: _ClassVar[int]
    virtual_ip: str
    def __init__(self, virtual_ip: _Optional[str] = ...) -> None: ...

class ReplicaStatus(_message.Message):
    __slots__ = ("phase", "reason", "ready", "message", "exit_code", "restarts", "ip", "started_unix_ms", "finished_unix_ms", "last_exit", "image_pull")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_EXIT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_PULL_FIELD_NUMBER: _ClassVar[int]
    phase: ReplicaPhase
    reason: ReplicaReason
    ready: bool
    message: str
    exit_code: int
    restarts: int
    ip: str
    started_unix_ms: int
    finished_unix_ms: int
    last_exit: str
    image_pull: ImagePullProgress
    def __init__(self, phase: _Optional[_Union[ReplicaPhase, str]] = ..., reason: _Optional[_Union[ReplicaReason, str]] = ..., ready: _Optional[bool] = ..., message: _Optional[str] = ..., exit_code: _Optional[int] = ..., restarts: _Optional[int] = ..., ip: _Optional[str] = ..., started_unix_ms: _Optional[int] = ..., finished_unix_ms: _Optional[int] = ..., last_exit: _Optional[str] = ..., image_pull: _Optional[_Union[ImagePullProgress, _Mapping]] = ...) -> None: ...

class ImagePullProgress(_message.Message):
    __slots__ = ("done", "bytes", "total_bytes", "elapsed_ms")
    DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_MS_FIELD_NUMBER: _ClassVar[int]
    done: bool
    bytes: int
    total_bytes: int
    elapsed_ms: int
    def __init__(self, done: _Optional[bool] = ..., bytes: _Optional[int] = ..., total_bytes: _Optional[int] = ..., elapsed_ms: _Optional[int] = ...) -> None: ...

class Replica(_message.Message):
    __slots__ = ("metadata", "workload", "spec_hash", "spec", "node", "status")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    SPEC_HASH_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    metadata: ObjectMeta
    workload: str
    spec_hash: str
    spec: WorkloadSpec
    node: str
    status: ReplicaStatus
    def __init__(self, metadata: _Optional[_Union[ObjectMeta, _Mapping]] = ..., workload: _Optional[str] = ..., spec_hash: _Optional[str] = ..., spec: _Optional[_Union[WorkloadSpec, _Mapping]] = ..., node: _Optional[str] = ..., status: _Optional[_Union[ReplicaStatus, _Mapping]] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("cpu_cores", "memory_bytes", "pids", "disk_bytes")
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    PIDS_FIELD_NUMBER: _ClassVar[int]
    DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    cpu_cores: float
    memory_bytes: int
    pids: int
    disk_bytes: int
    def __init__(self, cpu_cores: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., pids: _Optional[int] = ..., disk_bytes: _Optional[int] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("name", "address", "capacity", "labels", "cordoned", "ready", "registered_unix_ms", "agent_version", "runtime", "cgroup_mode", "pod_subnet", "not_ready_since_unix_ms", "registration")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CORDONED_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    CGROUP_MODE_FIELD_NUMBER: _ClassVar[int]
    POD_SUBNET_FIELD_NUMBER: _ClassVar[int]
    NOT_READY_SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    REGISTRATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    capacity: Resources
    labels: _containers.ScalarMap[str, str]
    cordoned: bool
    ready: bool
    registered_unix_ms: int
    agent_version: str
    runtime: str
    cgroup_mode: str
    pod_subnet: str
    not_ready_since_unix_ms: int
    registration: int
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., capacity: _Optional[_Union[Resources, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., cordoned: _Optional[bool] = ..., ready: _Optional[bool] = ..., registered_unix_ms: _Optional[int] = ..., agent_version: _Optional[str] = ..., runtime: _Optional[str] = ..., cgroup_mode: _Optional[str] = ..., pod_subnet: _Optional[str] = ..., not_ready_since_unix_ms: _Optional[int] = ..., registration: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("unix_ms", "kind", "namespace", "name", "type", "reason", "message", "source")
    UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    unix_ms: int
    kind: str
    namespace: str
    name: str
    type: str
    reason: str
    message: str
    source: str
    def __init__(self, unix_ms: _Optional[int] = ..., kind: _Optional[str] = ..., namespace: _Optional[str] = ..., name: _Optional[str] = ..., type: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class WorkloadRevision(_message.Message):
    __slots__ = ("number", "created_unix_ms", "change_cause", "spec")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    CHANGE_CAUSE_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    number: int
    created_unix_ms: int
    change_cause: str
    spec: WorkloadSpec
    def __init__(self, number: _Optional[int] = ..., created_unix_ms: _Optional[int] = ..., change_cause: _Optional[str] = ..., spec: _Optional[_Union[WorkloadSpec, _Mapping]] = ...) -> None: ...

from mctl.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WatchChangeType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WATCH_CHANGE_TYPE_UNSPECIFIED: _ClassVar[WatchChangeType]
    WATCH_CHANGE_TYPE_ADDED: _ClassVar[WatchChangeType]
    WATCH_CHANGE_TYPE_MODIFIED: _ClassVar[WatchChangeType]
    WATCH_CHANGE_TYPE_DELETED: _ClassVar[WatchChangeType]
WATCH_CHANGE_TYPE_UNSPECIFIED: WatchChangeType
WATCH_CHANGE_TYPE_ADDED: WatchChangeType
WATCH_CHANGE_TYPE_MODIFIED: WatchChangeType
WATCH_CHANGE_TYPE_DELETED: WatchChangeType

class ApplyRequest(_message.Message):
    __slots__ = ("workloads", "configs", "secrets", "dry_run")
    WORKLOADS_FIELD_NUMBER: _ClassVar[int]
    CONFIGS_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    workloads: _containers.RepeatedCompositeFieldContainer[_types_pb2.Workload]
    configs: _containers.RepeatedCompositeFieldContainer[_types_pb2.Config]
    secrets: _containers.RepeatedCompositeFieldContainer[_types_pb2.Secret]
    dry_run: bool
    def __init__(self, workloads: _Optional[_Iterable[_Union[_types_pb2.Workload, _Mapping]]] = ..., configs: _Optional[_Iterable[_Union[_types_pb2.Config, _Mapping]]] = ..., secrets: _Optional[_Iterable[_Union[_types_pb2.Secret, _Mapping]]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class ApplyResult(_message.Message):
    __slots__ = ("namespace", "name", "action", "kind", "rolls", "rolled_workloads", "stored_workload", "planned_workload", "stored_config", "planned_config", "stored_secret", "planned_secret")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROLLS_FIELD_NUMBER: _ClassVar[int]
    ROLLED_WORKLOADS_FIELD_NUMBER: _ClassVar[int]
    STORED_WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    PLANNED_WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    STORED_CONFIG_FIELD_NUMBER: _ClassVar[int]
    PLANNED_CONFIG_FIELD_NUMBER: _ClassVar[int]
    STORED_SECRET_FIELD_NUMBER: _ClassVar[int]
    PLANNED_SECRET_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    action: str
    kind: str
    rolls: bool
    rolled_workloads: _containers.RepeatedScalarFieldContainer[str]
    stored_workload: _types_pb2.Workload
    planned_workload: _types_pb2.Workload
    stored_config: _types_pb2.Config
    planned_config: _types_pb2.Config
    stored_secret: _types_pb2.Secret
    planned_secret: _types_pb2.Secret
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ..., action: _Optional[str] = ..., kind: _Optional[str] = ..., rolls: _Optional[bool] = ..., rolled_workloads: _Optional[_Iterable[str]] = ..., stored_workload: _Optional[_Union[_types_pb2.Workload, _Mapping]] = ..., planned_workload: _Optional[_Union[_types_pb2.Workload, _Mapping]] = ..., stored_config: _Optional[_Union[_types_pb2.Config, _Mapping]] = ..., planned_config: _Optional[_Union[_types_pb2.Config, _Mapping]] = ..., stored_secret: _Optional[_Union[_types_pb2.Secret, _Mapping]] = ..., planned_secret: _Optional[_Union[_types_pb2.Secret, _Mapping]] = ...) -> None: ...

class ApplyResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ApplyResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ApplyResult, _Mapping]]] = ...) -> None: ...

class ObjectRef(_message.Message):
    __slots__ = ("namespace", "name")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("workloads", "configs", "secrets", "volumes")
    WORKLOADS_FIELD_NUMBER: _ClassVar[int]
    CONFIGS_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    workloads: _containers.RepeatedCompositeFieldContainer[ObjectRef]
    configs: _containers.RepeatedCompositeFieldContainer[ObjectRef]
    secrets: _containers.RepeatedCompositeFieldContainer[ObjectRef]
    volumes: _containers.RepeatedCompositeFieldContainer[ObjectRef]
    def __init__(self, workloads: _Optional[_Iterable[_Union[ObjectRef, _Mapping]]] = ..., configs: _Optional[_Iterable[_Union[ObjectRef, _Mapping]]] = ..., secrets: _Optional[_Iterable[_Union[ObjectRef, _Mapping]]] = ..., volumes: _Optional[_Iterable[_Union[ObjectRef, _Mapping]]] = ...) -> None: ...

class DeleteResult(_message.Message):
    __slots__ = ("namespace", "name", "found", "kind")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    found: bool
    kind: str
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ..., found: _Optional[bool] = ..., kind: _Optional[str] = ...) -> None: ...

class ConfigList(_message.Message):
    __slots__ = ("items", "next_page_token")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_types_pb2.Config]
    next_page_token: str
    def __init__(self, items: _Optional[_Iterable[_Union[_types_pb2.Config, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SecretSummary(_message.Message):
    __slots__ = ("metadata", "keys")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    metadata: _types_pb2.ObjectMeta
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, metadata: _Optional[_Union[_types_pb2.ObjectMeta, _Mapping]] = ..., keys: _Optional[_Iterable[str]] = ...) -> None: ...

class SecretList(_message.Message):
    __slots__ = ("items", "next_page_token")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[SecretSummary]
    next_page_token: str
    def __init__(self, items: _Optional[_Iterable[_Union[SecretSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class VolumeList(_message.Message):
    __slots__ = ("items", "next_page_token")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_types_pb2.VolumeRecord]
    next_page_token: str
    def __init__(self, items: _Optional[_Iterable[_Union[_types_pb2.VolumeRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[DeleteResult]
    def __init__(self, results: _Optional[_Iterable[_Union[DeleteResult, _Mapping]]] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("namespace", "name", "workload", "page_size", "page_token", "label_selector")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    workload: str
    page_size: int
    page_token: str
    label_selector: str
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ..., workload: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., label_selector: _Optional[str] = ...) -> None: ...

class WorkloadList(_message.Message):
    __slots__ = ("items", "summaries", "next_page_token")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    SUMMARIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_types_pb2.Workload]
    summaries: _containers.RepeatedCompositeFieldContainer[WorkloadSummary]
    next_page_token: str
    def __init__(self, items: _Optional[_Iterable[_Union[_types_pb2.Workload, _Mapping]]] = ..., summaries: _Optional[_Iterable[_Union[WorkloadSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WorkloadSummary(_message.Message):
    __slots__ = ("desired", "running", "up_to_date", "present", "up_to_date_ready")
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    UP_TO_DATE_FIELD_NUMBER: _ClassVar[int]
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    UP_TO_DATE_READY_FIELD_NUMBER: _ClassVar[int]
    desired: int
    running: int
    up_to_date: int
    present: int
    up_to_date_ready: int
    def __init__(self, desired: _Optional[int] = ..., running: _Optional[int] = ..., up_to_date: _Optional[int] = ..., present: _Optional[int] = ..., up_to_date_ready: _Optional[int] = ...) -> None: ...

class ReplicaList(_message.Message):
    __slots__ = ("items", "usage", "next_page_token")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_types_pb2.Replica]
    usage: _containers.RepeatedCompositeFieldContainer[_types_pb2.Usage]
    next_page_token: str
    def __init__(self, items: _Optional[_Iterable[_Union[_types_pb2.Replica, _Mapping]]] = ..., usage: _Optional[_Iterable[_Union[_types_pb2.Usage, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class NodeList(_message.Message):
    __slots__ = ("items", "allocated", "usage", "replicas", "next_page_token")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_types_pb2.Node]
    allocated: _containers.RepeatedCompositeFieldContainer[_types_pb2.Resources]
    usage: _containers.RepeatedCompositeFieldContainer[_types_pb2.Usage]
    replicas: _containers.RepeatedScalarFieldContainer[int]
    next_page_token: str
    def __init__(self, items: _Optional[_Iterable[_Union[_types_pb2.Node, _Mapping]]] = ..., allocated: _Optional[_Iterable[_Union[_types_pb2.Resources, _Mapping]]] = ..., usage: _Optional[_Iterable[_Union[_types_pb2.Usage, _Mapping]]] = ..., replicas: _Optional[_Iterable[int]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class LogsRequest(_message.Message):
    __slots__ = ("namespace", "replica", "follow", "tail", "since_unix_ns", "previous")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    replica: str
    follow: bool
    tail: int
    since_unix_ns: int
    previous: bool
    def __init__(self, namespace: _Optional[str] = ..., replica: _Optional[str] = ..., follow: _Optional[bool] = ..., tail: _Optional[int] = ..., since_unix_ns: _Optional[int] = ..., previous: _Optional[bool] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("lines",)
    LINES_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[LogLine]
    def __init__(self, lines: _Optional[_Iterable[_Union[LogLine, _Mapping]]] = ...) -> None: ...

class LogLine(_message.Message):
    __slots__ = ("unix_ns", "stream", "data")
    UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    unix_ns: int
    stream: str
    data: bytes
    def __init__(self, unix_ns: _Optional[int] = ..., stream: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class CordonRequest(_message.Message):
    __slots__ = ("node", "cordoned")
    NODE_FIELD_NUMBER: _ClassVar[int]
    CORDONED_FIELD_NUMBER: _ClassVar[int]
    node: str
    cordoned: bool
    def __init__(self, node: _Optional[str] = ..., cordoned: _Optional[bool] = ...) -> None: ...

class CordonResponse(_message.Message):
    __slots__ = ("changed",)
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    def __init__(self, changed: _Optional[bool] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: str
    def __init__(self, node: _Optional[str] = ...) -> None: ...

class DrainResponse(_message.Message):
    __slots__ = ("evicted",)
    EVICTED_FIELD_NUMBER: _ClassVar[int]
    evicted: _containers.RepeatedCompositeFieldContainer[ObjectRef]
    def __init__(self, evicted: _Optional[_Iterable[_Union[ObjectRef, _Mapping]]] = ...) -> None: ...

class EventsRequest(_message.Message):
    __slots__ = ("kind", "namespace", "name", "page_size", "page_token")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    kind: str
    namespace: str
    name: str
    page_size: int
    page_token: str
    def __init__(self, kind: _Optional[str] = ..., namespace: _Optional[str] = ..., name: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class EventList(_message.Message):
    __slots__ = ("items", "next_page_token")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_types_pb2.Event]
    next_page_token: str
    def __init__(self, items: _Optional[_Iterable[_Union[_types_pb2.Event, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ClusterInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClusterInfoResponse(_message.Message):
    __slots__ = ("leader", "served_by", "leader_since_unix_ms", "server_version")
    LEADER_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    LEADER_SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    leader: str
    served_by: str
    leader_since_unix_ms: int
    server_version: str
    def __init__(self, leader: _Optional[str] = ..., served_by: _Optional[str] = ..., leader_since_unix_ms: _Optional[int] = ..., server_version: _Optional[str] = ...) -> None: ...

class ExecInput(_message.Message):
    __slots__ = ("start", "stdin", "stdin_closed", "resize")
    START_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    STDIN_CLOSED_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    start: ExecStart
    stdin: bytes
    stdin_closed: bool
    resize: TerminalSize
    def __init__(self, start: _Optional[_Union[ExecStart, _Mapping]] = ..., stdin: _Optional[bytes] = ..., stdin_closed: _Optional[bool] = ..., resize: _Optional[_Union[TerminalSize, _Mapping]] = ...) -> None: ...

class ExecStart(_message.Message):
    __slots__ = ("namespace", "replica", "command", "tty", "stdin", "size")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    TTY_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    replica: str
    command: _containers.RepeatedScalarFieldContainer[str]
    tty: bool
    stdin: bool
    size: TerminalSize
    def __init__(self, namespace: _Optional[str] = ..., replica: _Optional[str] = ..., command: _Optional[_Iterable[str]] = ..., tty: _Optional[bool] = ..., stdin: _Optional[bool] = ..., size: _Optional[_Union[TerminalSize, _Mapping]] = ...) -> None: ...

class TerminalSize(_message.Message):
    __slots__ = ("rows", "cols")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    rows: int
    cols: int
    def __init__(self, rows: _Optional[int] = ..., cols: _Optional[int] = ...) -> None: ...

class ExecOutput(_message.Message):
    __slots__ = ("stdout", "stderr", "exited", "exit_code")
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    EXITED_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    stdout: bytes
    stderr: bytes
    exited: bool
    exit_code: int
    def __init__(self, stdout: _Optional[bytes] = ..., stderr: _Optional[bytes] = ..., exited: _Optional[bool] = ..., exit_code: _Optional[int] = ...) -> None: ...

class WatchObjectsRequest(_message.Message):
    __slots__ = ("kind", "namespace", "name", "label_selector")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    kind: str
    namespace: str
    name: str
    label_selector: str
    def __init__(self, kind: _Optional[str] = ..., namespace: _Optional[str] = ..., name: _Optional[str] = ..., label_selector: _Optional[str] = ...) -> None: ...

class WatchChange(_message.Message):
    __slots__ = ("type", "version", "workload", "summary", "replica", "node", "allocated", "replicas", "usage")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    type: WatchChangeType
    version: str
    workload: _types_pb2.Workload
    summary: WorkloadSummary
    replica: _types_pb2.Replica
    node: _types_pb2.Node
    allocated: _types_pb2.Resources
    replicas: int
    usage: _types_pb2.Usage
    def __init__(self, type: _Optional[_Union[WatchChangeType, str]] = ..., version: _Optional[str] = ..., workload: _Optional[_Union[_types_pb2.Workload, _Mapping]] = ..., summary: _Optional[_Union[WorkloadSummary, _Mapping]] = ..., replica: _Optional[_Union[_types_pb2.Replica, _Mapping]] = ..., node: _Optional[_Union[_types_pb2.Node, _Mapping]] = ..., allocated: _Optional[_Union[_types_pb2.Resources, _Mapping]] = ..., replicas: _Optional[int] = ..., usage: _Optional[_Union[_types_pb2.Usage, _Mapping]] = ...) -> None: ...

class WatchObjectsResponse(_message.Message):
    __slots__ = ("changes", "synced")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    SYNCED_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[WatchChange]
    synced: bool
    def __init__(self, changes: _Optional[_Iterable[_Union[WatchChange, _Mapping]]] = ..., synced: _Optional[bool] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ("kind", "namespace", "name", "follow")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    kind: str
    namespace: str
    name: str
    follow: bool
    def __init__(self, kind: _Optional[str] = ..., namespace: _Optional[str] = ..., name: _Optional[str] = ..., follow: _Optional[bool] = ...) -> None: ...

class WatchEventsResponse(_message.Message):
    __slots__ = ("items", "ids", "synced")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    SYNCED_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_types_pb2.Event]
    ids: _containers.RepeatedScalarFieldContainer[str]
    synced: bool
    def __init__(self, items: _Optional[_Iterable[_Union[_types_pb2.Event, _Mapping]]] = ..., ids: _Optional[_Iterable[str]] = ..., synced: _Optional[bool] = ...) -> None: ...

class ScaleRequest(_message.Message):
    __slots__ = ("namespace", "name", "replicas")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    replicas: int
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ..., replicas: _Optional[int] = ...) -> None: ...

class ScaleResponse(_message.Message):
    __slots__ = ("previous", "changed")
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    previous: int
    changed: bool
    def __init__(self, previous: _Optional[int] = ..., changed: _Optional[bool] = ...) -> None: ...

class RolloutHistoryRequest(_message.Message):
    __slots__ = ("namespace", "name")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class RolloutHistoryResponse(_message.Message):
    __slots__ = ("revisions", "current")
    REVISIONS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    revisions: _containers.RepeatedCompositeFieldContainer[_types_pb2.WorkloadRevision]
    current: int
    def __init__(self, revisions: _Optional[_Iterable[_Union[_types_pb2.WorkloadRevision, _Mapping]]] = ..., current: _Optional[int] = ...) -> None: ...

class RolloutUndoRequest(_message.Message):
    __slots__ = ("namespace", "name", "to_revision")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TO_REVISION_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    to_revision: int
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ..., to_revision: _Optional[int] = ...) -> None: ...

class RolloutRestartRequest(_message.Message):
    __slots__ = ("namespace", "name")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class RolloutChangeResponse(_message.Message):
    __slots__ = ("changed", "revision", "message")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    revision: int
    message: str
    def __init__(self, changed: _Optional[bool] = ..., revision: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

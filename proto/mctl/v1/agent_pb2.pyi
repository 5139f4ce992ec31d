from mctl.v1 import types_pb2 as _types_pb2
from mctl.v1 import control_pb2 as _control_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DesiredSet(_message.Message):
    __slots__ = ("node", "revision", "replicas")
    NODE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    node: str
    revision: int
    replicas: _containers.RepeatedCompositeFieldContainer[_types_pb2.Replica]
    def __init__(self, node: _Optional[str] = ..., revision: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[_types_pb2.Replica, _Mapping]]] = ...) -> None: ...

class DesiredAck(_message.Message):
    __slots__ = ("accepted", "revision")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    revision: int
    def __init__(self, accepted: _Optional[bool] = ..., revision: _Optional[int] = ...) -> None: ...

class ListContainersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ContainerInfo(_message.Message):
    __slots__ = ("id", "namespace", "replica", "uid", "status", "monitor_pid", "init_pid", "cgroup", "bundle", "limits", "usage")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MONITOR_PID_FIELD_NUMBER: _ClassVar[int]
    INIT_PID_FIELD_NUMBER: _ClassVar[int]
    CGROUP_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    namespace: str
    replica: str
    uid: str
    status: _types_pb2.ReplicaStatus
    monitor_pid: int
    init_pid: int
    cgroup: str
    bundle: str
    limits: _types_pb2.Resources
    usage: _types_pb2.Usage
    def __init__(self, id: _Optional[str] = ..., namespace: _Optional[str] = ..., replica: _Optional[str] = ..., uid: _Optional[str] = ..., status: _Optional[_Union[_types_pb2.ReplicaStatus, _Mapping]] = ..., monitor_pid: _Optional[int] = ..., init_pid: _Optional[int] = ..., cgroup: _Optional[str] = ..., bundle: _Optional[str] = ..., limits: _Optional[_Union[_types_pb2.Resources, _Mapping]] = ..., usage: _Optional[_Union[_types_pb2.Usage, _Mapping]] = ...) -> None: ...

class ContainerList(_message.Message):
    __slots__ = ("containers",)
    CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    containers: _containers.RepeatedCompositeFieldContainer[ContainerInfo]
    def __init__(self, containers: _Optional[_Iterable[_Union[ContainerInfo, _Mapping]]] = ...) -> None: ...

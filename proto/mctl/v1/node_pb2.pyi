from mctl.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: _types_pb2.Node
    def __init__(self, node: _Optional[_Union[_types_pb2.Node, _Mapping]] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("heartbeat_interval_ms", "pod_subnet", "cluster_cidr", "service_cidr")
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    POD_SUBNET_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_CIDR_FIELD_NUMBER: _ClassVar[int]
    SERVICE_CIDR_FIELD_NUMBER: _ClassVar[int]
    heartbeat_interval_ms: int
    pod_subnet: str
    cluster_cidr: str
    service_cidr: str
    def __init__(self, heartbeat_interval_ms: _Optional[int] = ..., pod_subnet: _Optional[str] = ..., cluster_cidr: _Optional[str] = ..., service_cidr: _Optional[str] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("node", "usage")
    NODE_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    node: str
    usage: _types_pb2.Usage
    def __init__(self, node: _Optional[str] = ..., usage: _Optional[_Union[_types_pb2.Usage, _Mapping]] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("reregister", "heartbeat_interval_ms")
    REREGISTER_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    reregister: bool
    heartbeat_interval_ms: int
    def __init__(self, reregister: _Optional[bool] = ..., heartbeat_interval_ms: _Optional[int] = ...) -> None: ...

class ReplicaReport(_message.Message):
    __slots__ = ("namespace", "name", "uid", "spec_hash", "status", "usage")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    SPEC_HASH_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    uid: str
    spec_hash: str
    status: _types_pb2.ReplicaStatus
    usage: _types_pb2.Usage
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ..., uid: _Optional[str] = ..., spec_hash: _Optional[str] = ..., status: _Optional[_Union[_types_pb2.ReplicaStatus, _Mapping]] = ..., usage: _Optional[_Union[_types_pb2.Usage, _Mapping]] = ...) -> None: ...

class StatusReport(_message.Message):
    __slots__ = ("node", "replicas", "complete", "events", "volumes", "image_digests")
    NODE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DIGESTS_FIELD_NUMBER: _ClassVar[int]
    node: str
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaReport]
    complete: bool
    events: _containers.RepeatedCompositeFieldContainer[_types_pb2.Event]
    volumes: _containers.RepeatedCompositeFieldContainer[VolumeUsage]
    image_digests: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node: _Optional[str] = ..., replicas: _Optional[_Iterable[_Union[ReplicaReport, _Mapping]]] = ..., complete: _Optional[bool] = ..., events: _Optional[_Iterable[_Union[_types_pb2.Event, _Mapping]]] = ..., volumes: _Optional[_Iterable[_Union[VolumeUsage, _Mapping]]] = ..., image_digests: _Optional[_Iterable[str]] = ...) -> None: ...

class VolumeUsage(_message.Message):
    __slots__ = ("namespace", "name", "used_bytes")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    used_bytes: int
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ..., used_bytes: _Optional[int] = ...) -> None: ...

class StatusAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

from mctl.v1 import types_pb2 as _types_pb2
from mctl.v1 import control_pb2 as _control_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageChunk(_message.Message):
    __slots__ = ("name", "filename", "size", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    filename: str
    size: int
    data: bytes
    def __init__(self, name: _Optional[str] = ..., filename: _Optional[str] = ..., size: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class ImageInfo(_message.Message):
    __slots__ = ("name", "layers", "size_bytes", "created_unix_ms", "entrypoint", "cmd", "env", "working_dir", "user", "digest")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ENTRYPOINT_FIELD_NUMBER: _ClassVar[int]
    CMD_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    WORKING_DIR_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    name: str
    layers: _containers.RepeatedScalarFieldContainer[str]
    size_bytes: int
    created_unix_ms: int
    entrypoint: _containers.RepeatedScalarFieldContainer[str]
    cmd: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.RepeatedScalarFieldContainer[str]
    working_dir: str
    user: str
    digest: str
    def __init__(self, name: _Optional[str] = ..., layers: _Optional[_Iterable[str]] = ..., size_bytes: _Optional[int] = ..., created_unix_ms: _Optional[int] = ..., entrypoint: _Optional[_Iterable[str]] = ..., cmd: _Optional[_Iterable[str]] = ..., env: _Optional[_Iterable[str]] = ..., working_dir: _Optional[str] = ..., user: _Optional[str] = ..., digest: _Optional[str] = ...) -> None: ...

class PullImageRequest(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: str
    def __init__(self, ref: _Optional[str] = ...) -> None: ...

class PullImageReply(_message.Message):
    __slots__ = ("image", "present", "fetched_bytes", "elapsed_ms", "layers_new")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    FETCHED_BYTES_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_MS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_NEW_FIELD_NUMBER: _ClassVar[int]
    image: ImageInfo
    present: bool
    fetched_bytes: int
    elapsed_ms: int
    layers_new: int
    def __init__(self, image: _Optional[_Union[ImageInfo, _Mapping]] = ..., present: _Optional[bool] = ..., fetched_bytes: _Optional[int] = ..., elapsed_ms: _Optional[int] = ..., layers_new: _Optional[int] = ...) -> None: ...

class RemoveImageRequest(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: str
    def __init__(self, ref: _Optional[str] = ...) -> None: ...

class RemoveImageReply(_message.Message):
    __slots__ = ("layers_removed", "bytes_freed")
    LAYERS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FREED_FIELD_NUMBER: _ClassVar[int]
    layers_removed: int
    bytes_freed: int
    def __init__(self, layers_removed: _Optional[int] = ..., bytes_freed: _Optional[int] = ...) -> None: ...

class ImportImageReply(_message.Message):
    __slots__ = ("images", "layers_new", "layers_present", "received_bytes", "warnings")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    LAYERS_NEW_FIELD_NUMBER: _ClassVar[int]
    LAYERS_PRESENT_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[ImageInfo]
    layers_new: int
    layers_present: int
    received_bytes: int
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, images: _Optional[_Iterable[_Union[ImageInfo, _Mapping]]] = ..., layers_new: _Optional[int] = ..., layers_present: _Optional[int] = ..., received_bytes: _Optional[int] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class ListImagesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ImageList(_message.Message):
    __slots__ = ("node", "images")
    NODE_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    node: str
    images: _containers.RepeatedCompositeFieldContainer[ImageInfo]
    def __init__(self, node: _Optional[str] = ..., images: _Optional[_Iterable[_Union[ImageInfo, _Mapping]]] = ...) -> None: ...

class InspectRequest(_message.Message):
    __slots__ = ("topic", "limit")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    topic: str
    limit: int
    def __init__(self, topic: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class InspectReply(_message.Message):
    __slots__ = ("lines",)
    LINES_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, lines: _Optional[_Iterable[str]] = ...) -> None: ...

class DesiredSet(_message.Message):
    __slots__ = ("node", "revision", "replicas", "nodes", "peers", "services", "configs", "secrets")
    NODE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    CONFIGS_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    node: str
    revision: int
    replicas: _containers.RepeatedCompositeFieldContainer[_types_pb2.Replica]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeRoute]
    peers: _containers.RepeatedCompositeFieldContainer[ReplicaAddress]
    services: _containers.RepeatedCompositeFieldContainer[Service]
    configs: _containers.RepeatedCompositeFieldContainer[_types_pb2.Config]
    secrets: _containers.RepeatedCompositeFieldContainer[_types_pb2.Secret]
    def __init__(self, node: _Optional[str] = ..., revision: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[_types_pb2.Replica, _Mapping]]] = ..., nodes: _Optional[_Iterable[_Union[NodeRoute, _Mapping]]] = ..., peers: _Optional[_Iterable[_Union[ReplicaAddress, _Mapping]]] = ..., services: _Optional[_Iterable[_Union[Service, _Mapping]]] = ..., configs: _Optional[_Iterable[_Union[_types_pb2.Config, _Mapping]]] = ..., secrets: _Optional[_Iterable[_Union[_types_pb2.Secret, _Mapping]]] = ...) -> None: ...

class Service(_message.Message):
    __slots__ = ("namespace", "workload", "virtual_ip", "ports", "endpoints")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_IP_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    workload: str
    virtual_ip: str
    ports: _containers.RepeatedCompositeFieldContainer[ServicePort]
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    def __init__(self, namespace: _Optional[str] = ..., workload: _Optional[str] = ..., virtual_ip: _Optional[str] = ..., ports: _Optional[_Iterable[_Union[ServicePort, _Mapping]]] = ..., endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ...) -> None: ...

class ServicePort(_message.Message):
    __slots__ = ("name", "port", "protocol")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    name: str
    port: int
    protocol: str
    def __init__(self, name: _Optional[str] = ..., port: _Optional[int] = ..., protocol: _Optional[str] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("replica", "ip", "ready")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    replica: str
    ip: str
    ready: bool
    def __init__(self, replica: _Optional[str] = ..., ip: _Optional[str] = ..., ready: _Optional[bool] = ...) -> None: ...

class NodeRoute(_message.Message):
    __slots__ = ("name", "address", "pod_subnet")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    POD_SUBNET_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    pod_subnet: str
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., pod_subnet: _Optional[str] = ...) -> None: ...

class ReplicaAddress(_message.Message):
    __slots__ = ("namespace", "workload", "name", "ip")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    workload: str
    name: str
    ip: str
    def __init__(self, namespace: _Optional[str] = ..., workload: _Optional[str] = ..., name: _Optional[str] = ..., ip: _Optional[str] = ...) -> None: ...

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

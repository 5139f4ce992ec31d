"""The agent's gRPC API: desired sets in, containers and logs out."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

import grpc

from mctl.common import containerlog, execstream, imageref
from mctl.common.phases import phase_name
from mctl.v1 import agent_pb2, agent_pb2_grpc, control_pb2, types_pb2

from . import debug, execution
from .containers import ContainerManager
from .images.importer import ImageImporter, ImportRefused, is_disk_full
from .images.pull import PullError, image_of, is_pulled
from .images.source import ArchiveError
from .images.store import ImageError
from .node import NodeLoop
from .usage import UsageSampler

log = logging.getLogger(__name__)


class AgentService(agent_pb2_grpc.AgentServicer):
    def __init__(self, loop: NodeLoop, manager: ContainerManager, sampler: UsageSampler,
                 node: str, recent: debug.RecentLog | None = None,
                 images: ImageImporter | None = None) -> None:
        self.recent = recent
        self.images = images or ImageImporter(manager.images)
        self.loop = loop
        self.manager = manager
        self.sampler = sampler
        self.node = node

    def SetDesired(self, request: agent_pb2.DesiredSet,
                   context: grpc.ServicerContext) -> agent_pb2.DesiredAck:
        if request.node and request.node != self.node:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"this is node {self.node}, not {request.node}")
        accepted = self.loop.set_desired(request.revision, list(request.replicas),
                                         request.configs, request.secrets)
        if accepted:
            self.loop.set_network(list(request.nodes), list(request.peers))
            self.loop.set_services(list(request.services))
        return agent_pb2.DesiredAck(accepted=accepted, revision=request.revision)

    def ListContainers(self, request: agent_pb2.ListContainersRequest,
                       context: grpc.ServicerContext) -> agent_pb2.ContainerList:
        out = agent_pb2.ContainerList()
        now = int(time.time() * 1000)
        for c in sorted(self.manager.snapshot(), key=lambda c: c.id):
            info = out.containers.add(
                id=c.id, namespace=c.replica.metadata.namespace, replica=c.replica.metadata.name,
                uid=c.replica.metadata.uid, monitor_pid=c.monitor_pid, init_pid=c.init_pid,
                cgroup=c.cgroup, bundle=c.bundle)
            info.status.CopyFrom(self.loop.status_of(c, now))
            info.limits.CopyFrom(c.replica.spec.resources)
            usage = self.sampler.latest(c.id)
            if usage is not None:
                info.usage.CopyFrom(usage)
        return out

    def Exec(self, request_iterator: Iterator[control_pb2.ExecInput],
             context: grpc.ServicerContext) -> Iterator[control_pb2.ExecOutput]:
        first = execstream.take_start(request_iterator)
        if first is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, execstream.BAD_START)
        start = first.start
        ns = start.namespace or "default"
        found = [c for c in self.manager.snapshot()
                 if (c.replica.metadata.namespace, c.replica.metadata.name) == (ns, start.replica)]
        if not found:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"replica {start.replica} has no container on node {self.node}")
        c = found[0]
        phase = self.loop.status_of(c, int(time.time() * 1000)).phase
        if phase != types_pb2.REPLICA_PHASE_RUNNING or not c.init_pid:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"replica {start.replica} is not running (phase {phase_name(phase)})")
        try:
            yield from execution.run(c.init_pid, c.bundle, c.id, first, request_iterator,
                                     context.add_callback)
        except OSError as e:
            context.abort(grpc.StatusCode.INTERNAL, f"exec in {start.replica}: {e}")

    def Inspect(self, request: agent_pb2.InspectRequest,
                context: grpc.ServicerContext) -> agent_pb2.InspectReply:
        try:
            lines = debug.inspect(request.topic, self.manager, self.recent, request.limit,
                                  drift=self.loop.selfcheck.record,
                                  services=self.loop.services.view)
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return agent_pb2.InspectReply(lines=lines)

    def ImportImage(self, request_iterator: Iterator[agent_pb2.ImageChunk],
                    context: grpc.ServicerContext) -> agent_pb2.ImportImageReply:
        try:
            result, received = self.images.receive(request_iterator)
        except (ImportRefused, ArchiveError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except OSError as e:
            if is_disk_full(e):
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"node {self.node} has no space left for the image: {e}")
            log.exception("image import failed")
            context.abort(grpc.StatusCode.INTERNAL, f"image import on node {self.node}: {e}")
        return agent_pb2.ImportImageReply(
            images=[self.images.info(i) for i in result.images],
            layers_new=result.layers_new, layers_present=result.layers_present,
            received_bytes=received, warnings=result.warnings)

    def ListImages(self, request: agent_pb2.ListImagesRequest,
                   context: grpc.ServicerContext) -> agent_pb2.ImageList:
        return agent_pb2.ImageList(node=self.node, images=self.images.list())

    def PullImage(self, request: agent_pb2.PullImageRequest,
                  context: grpc.ServicerContext) -> agent_pb2.PullImageReply:
        puller = self.loop.puller
        problem = imageref.reference_problem(request.ref)
        if problem is None and not is_pulled(request.ref):
            problem = (f"{request.ref!r} names no registry host "
                       "(e.g. registry.local:5000/team/app:1.2)")
        if problem is not None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        if puller is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"node {self.node} does not pull images")
        try:
            pulled = puller.pull(request.ref)
        except PullError as e:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{request.ref}: {e}")
        return agent_pb2.PullImageReply(
            image=self.images.info(pulled.image), present=pulled.present,
            fetched_bytes=pulled.fetched_bytes, elapsed_ms=pulled.elapsed_ms,
            layers_new=pulled.layers_new)

    def RemoveImage(self, request: agent_pb2.RemoveImageRequest,
                    context: grpc.ServicerContext) -> agent_pb2.RemoveImageReply:
        ref = imageref.normalize_reference(request.ref)
        if ref == "busybox:latest":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "busybox:latest is built into every node; it cannot be removed")
        # The users checked and the image removed under one lock, which the
        # node loop holds while it makes a container (store.py).
        with self.images.store.users_lock:
            users = sorted(c.replica.metadata.name for c in self.manager.snapshot()
                           if imageref.normalize_reference(image_of(c.replica)) == ref)
            if users:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              f"image {ref} is used by replica {', '.join(users[:5])}"
                              f"{' and others' if len(users) > 5 else ''} on node {self.node}")
            try:
                layers, freed = self.images.remove(ref)
            except ImageError as e:
                context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        return agent_pb2.RemoveImageReply(layers_removed=layers, bytes_freed=freed)

    def Logs(self, request: control_pb2.LogsRequest,
             context: grpc.ServicerContext) -> Iterator[control_pb2.LogChunk]:
        namespace = request.namespace or "default"
        path = self.manager.log_path(namespace, request.replica, previous=request.previous)
        if not os.path.exists(path):
            if request.previous and os.path.exists(self.manager.log_path(namespace,
                                                                          request.replica)):
                context.abort(grpc.StatusCode.NOT_FOUND,
                              f"replica {request.replica} has no previous container:"
                              " it has not restarted")
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"replica {request.replica} has no container on node {self.node}")
        # A previous container writes no more: its log is read to the end, not followed.
        follow = request.follow and not request.previous
        for lines in containerlog.read(path, request.tail, follow, context.is_active,
                                       since_ns=max(0, request.since_unix_ns)):
            chunk = control_pb2.LogChunk()
            for ns, stream, data in lines:
                chunk.lines.add(unix_ns=ns, stream=stream, data=data)
            yield chunk

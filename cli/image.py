"""`mctl image import|pull|ls|rm`: images on the cluster's nodes.

Each node keeps its own image store, so an import goes to every Ready node
(or the ones --node names): the CLI asks the scheduler for the nodes, then
dials each agent directly, as `mctl debug node` does, with the admin
certificate, and streams the archive to all of them in parallel. A directory
(an OCI image layout, or an unpacked `docker save`) is tarred on the fly.
Progress goes to stderr (on a terminal, or with --progress), one result
line per node to stdout; a node that fails does not stop the others, and the
command then exits 1.

What is not an archive is refused before anything is sent: a file that is
not a regular file (/dev/zero, a FIFO: it could not be read once per node
anyway), or whose first bytes are no tar or compressed tar
(common/archivehead.py); and so is an archive over --max-size, also when
it grows while it is sent.

Nodes that join the cluster later do not get earlier imports: import again.

`image pull REF` asks each node to pull from the registry itself (the
agent's pull: images/pull.py), printing a line per node as it finishes;
`image rm REF` removes the image and the layers no other image uses, and
a node where a replica uses it refuses, naming the replica. `image ls`
shows a DIGEST column when an image was pulled by digest.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
from google.protobuf import json_format

from mctl.common import archivehead, imageref, pki, rpc, tls
from mctl.common.quantity import QuantityError, format_bytes_short, parse_memory
from mctl.v1 import agent_pb2, agent_pb2_grpc, control_pb2, types_pb2

from . import config, output
from .client import CliError, list_all, stub

CHUNK = 1 << 20
# Large enough for the images a small cluster runs, small enough that a
# wrong file is not streamed for long; the nodes have their own limit too.
DEFAULT_MAX_SIZE = "4Gi"


# -- which nodes, and how to reach them ------------------------------------------------------


def target_nodes(args: argparse.Namespace) -> list[types_pb2.Node]:
    """Ready nodes, or those --node names (tried even when NotReady: the user asked)."""
    nodes = list_all(args, stub(args).ListNodes, control_pb2.ListRequest()).items
    if args.node:
        by_name = {n.name: n for n in nodes}
        missing = [n for n in args.node if n not in by_name]
        if missing:
            raise CliError(f"node {', '.join(missing)} not found")
        return [by_name[n] for n in dict.fromkeys(args.node)]
    for n in nodes:
        if not n.ready:
            print(f"{n.name}: skipped, the node is NotReady", file=sys.stderr)
    ready = [n for n in nodes if n.ready]
    if not ready:
        raise CliError("no Ready nodes")
    return ready


def agent_stub(args: argparse.Namespace, node: types_pb2.Node) -> agent_pb2_grpc.AgentStub:
    try:
        credentials = config.credentials(args)
    except tls.TLSError as e:
        raise CliError(str(e)) from None
    args.tls_on = credentials is not None
    return agent_pb2_grpc.AgentStub(
        rpc.make_channel(node.address, credentials, pki.node_server_name(node.name)))


def describe_error(args: argparse.Namespace, node: types_pb2.Node, e: grpc.RpcError) -> str:
    if not isinstance(e, grpc.Call):
        return str(e)
    details = e.details() or e.code().name.lower()
    if e.code() == grpc.StatusCode.UNAVAILABLE:
        problem = tls.explain_failure(details, getattr(args, "tls_on", True))
        if problem:
            return f"TLS handshake with the agent at {node.address} failed: {problem}"
        return f"cannot reach the agent at {node.address}"
    return details


def each_node(nodes: list[types_pb2.Node], fn: Callable[[types_pb2.Node], object]
              ) -> dict[str, object]:
    """Runs fn(node) for every node in parallel; node name -> result or exception."""
    results: dict[str, object] = {}

    def run(node: types_pb2.Node) -> None:
        try:
            results[node.name] = fn(node)
        except Exception as e:  # reported per node by the caller
            results[node.name] = e
    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


# -- the archive as a stream of chunks ---------------------------------------------------


@dataclass
class Archive:
    path: str
    is_dir: bool
    size: int             # exact for a file; the files' total for a directory

    @property
    def filename(self) -> str:
        return os.path.basename(os.path.normpath(self.path))


def open_archive(path: str, max_size: int) -> Archive:
    """The archive at `path`, refused now if it is none or too big."""
    if os.path.isdir(path):
        if not any(os.path.isfile(os.path.join(path, f)) for f in ("oci-layout",
                                                                     "manifest.json")):
            raise CliError(f"{path}: neither an OCI image layout (no oci-layout) nor an "
                           "unpacked docker save (no manifest.json)")
        size = sum(os.path.getsize(os.path.join(d, f))
                   for d, _, files in os.walk(path) for f in files)
        archive = Archive(path, True, size)
    else:
        try:
            with open(path, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise CliError(f"{path}: not a regular file (it is read once per node:"
                                   " save the archive to a file first)")
                head = f.read(archivehead.HEAD_BYTES)
                archive = Archive(path, False, os.fstat(f.fileno()).st_size)
        except OSError as e:
            raise CliError(f"{path}: {e.strerror or e}") from None
        if problem := archivehead.problem(head):
            raise CliError(f"{path}: {problem}")
    if archive.size > max_size:
        raise CliError(too_big(path, archive.size, max_size))
    return archive


def too_big(path: str, size: int, max_size: int) -> str:
    return (f"{path}: {format_bytes_short(size)} is over the limit of"
            f" {format_bytes_short(max_size)} (--max-size)")


def read_error(e: CliError | OSError) -> str:
    return str(e) if isinstance(e, CliError) else f"cannot read the archive: {e.strerror or e}"


def file_chunks(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def dir_chunks(path: str) -> Iterator[bytes]:
    """`path` as a tar stream, made while it is sent (a thread writes into a pipe)."""
    r, w = os.pipe()
    failure: list[BaseException] = []

    def write() -> None:
        try:
            with os.fdopen(w, "wb") as out, tarfile.open(fileobj=out, mode="w|",
                                                         dereference=True) as tf:
                for dirpath, dirnames, filenames in os.walk(path):
                    dirnames.sort()
                    for name in sorted(filenames):
                        full = os.path.join(dirpath, name)
                        tf.add(full, arcname=os.path.relpath(full, path), recursive=False)
        except BrokenPipeError:
            pass  # the reader stopped: the upload failed, and says why
        except BaseException as e:  # reported by the reader
            failure.append(e)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    with os.fdopen(r, "rb") as pipe:
        while chunk := pipe.read(CHUNK):
            yield chunk
    writer.join()
    if failure:
        e = failure[0]
        raise CliError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}")


class Progress:
    """Bytes sent per node: one rewritten stderr line on a terminal; with
    `always` and no terminal, a line every few seconds (for logs)."""

    def __init__(self, nodes: list[str], total: int, always: bool = False) -> None:
        self.sent = dict.fromkeys(nodes, 0)
        self.total = total
        self.tty = sys.stderr.isatty()
        self.lines = always and not self.tty
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._show, daemon=True)

    def add(self, node: str, n: int) -> None:
        self.sent[node] += n

    def done(self, node: str) -> None:
        if not self.tty:
            print(f"{node}: sent {format_bytes_short(self.sent[node])}, importing",
                  file=sys.stderr, flush=True)

    def _line(self) -> str:
        parts = []
        for node, sent in self.sent.items():
            pct = f" {min(100, sent * 100 // self.total)}%" if self.total else ""
            parts.append(f"{node} {format_bytes_short(sent)}{pct}")
        return "sending: " + ", ".join(parts)

    def _show(self) -> None:
        while not self._stop.wait(2.0 if self.lines else 0.2):
            if self.lines:
                print(self._line(), file=sys.stderr, flush=True)
            else:
                print(f"\r{self._line()}\x1b[K", end="", file=sys.stderr, flush=True)

    def __enter__(self) -> Progress:
        if self.tty or self.lines:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.tty or self.lines:
            self._thread.join()
            print(f"\r{self._line()}\x1b[K" if self.tty else self._line(), file=sys.stderr,
                  flush=True)


# -- the commands -----------------------------------------------------------------------------


def cmd_import(args: argparse.Namespace) -> int:
    if args.name:
        problem = imageref.problem(args.name)
        if problem:
            raise CliError(f"--name: {problem}")
    try:
        max_size = parse_memory(args.max_size)
    except QuantityError as e:
        raise CliError(f"--max-size: {e}") from None
    if max_size <= 0:
        raise CliError(f"--max-size: must be more than 0, not {args.max_size}")
    archive = open_archive(args.archive, max_size)
    nodes = target_nodes(args)
    stubs = {n.name: agent_stub(args, n) for n in nodes}

    def send(node: types_pb2.Node, progress: Progress) -> agent_pb2.ImportImageReply:
        # gRPC reports an exception of the request iterator only as CANCELLED:
        # keep it, to say what really went wrong.
        local: list[Exception] = []

        def requests() -> Iterator[agent_pb2.ImageChunk]:
            yield agent_pb2.ImageChunk(name=args.name or "", filename=archive.filename,
                                       size=0 if archive.is_dir else archive.size)
            chunks = dir_chunks(archive.path) if archive.is_dir else file_chunks(archive.path)
            sent = 0
            try:
                for chunk in chunks:
                    sent += len(chunk)
                    if sent > max_size:     # grew while sent, or a directory's tar
                        raise CliError(too_big(archive.path, sent, max_size))
                    progress.add(node.name, len(chunk))
                    yield agent_pb2.ImageChunk(data=chunk)
            except (CliError, OSError) as e:
                local.append(e)
                raise
            progress.done(node.name)
        try:
            reply: agent_pb2.ImportImageReply = stubs[node.name].ImportImage(
                requests(), timeout=args.timeout)
            return reply
        except grpc.RpcError:
            if local:
                raise local[0] from None
            raise

    t0 = time.monotonic()
    with Progress([n.name for n in nodes], archive.size, args.progress) as progress:
        results = each_node(nodes, lambda n: send(n, progress))
    failed = 0
    for node in nodes:
        r = results[node.name]
        if isinstance(r, agent_pb2.ImportImageReply):
            for image in r.images:
                print(f"{node.name}: imported {image.name} ({len(image.layers)} layers, "
                      f"{r.layers_new} new; {format_bytes_short(image.size_bytes)})")
            for warning in r.warnings:
                print(f"{node.name}: warning: {warning}", file=sys.stderr)
            continue
        failed += 1
        why = (describe_error(args, node, r) if isinstance(r, grpc.RpcError)
               else read_error(r) if isinstance(r, (CliError, OSError)) else str(r))
        print(f"{node.name}: failed: {why}", file=sys.stderr)
    if failed:
        raise CliError(f"import failed on {failed} of {len(nodes)} node"
                       f"{'s' if len(nodes) != 1 else ''}")
    if sys.stderr.isatty():
        print(f"done in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return 0


def pull_problem(ref: str) -> str | None:
    """What is wrong with REF for `image pull` (the agents check it too)."""
    problem = imageref.reference_problem(ref)
    if problem is None and imageref.registry_of(ref) is None:
        problem = (f"{ref!r} names no registry host; give REGISTRY/REPO[:TAG][@sha256:DIGEST] "
                   "(e.g. registry.local:5000/team/app:1.2)")
    return problem


def cmd_pull(args: argparse.Namespace) -> int:
    problem = pull_problem(args.ref)
    if problem:
        raise CliError(problem)
    nodes = target_nodes(args)
    stubs = {n.name: agent_stub(args, n) for n in nodes}
    names = [n.name for n in nodes]
    print(f"pulling {args.ref} on {', '.join(names)}", file=sys.stderr)

    def one(node: types_pb2.Node) -> agent_pb2.PullImageReply:
        reply: agent_pb2.PullImageReply = stubs[node.name].PullImage(
            agent_pb2.PullImageRequest(ref=args.ref), timeout=args.timeout)
        # Printed as each node finishes: the progress of a pull to many nodes.
        print(f"{node.name}: " + (f"{reply.image.name} is already present" if reply.present else
              f"pulled {reply.image.name} ({len(reply.image.layers)} layers, "
              f"{reply.layers_new} new; {format_bytes_short(reply.fetched_bytes)} fetched "
              f"in {reply.elapsed_ms / 1000:.1f}s)"), flush=True)
        return reply

    results = each_node(nodes, one)
    failed = 0
    for node in nodes:
        r = results[node.name]
        if not isinstance(r, agent_pb2.PullImageReply):
            failed += 1
            why = describe_error(args, node, r) if isinstance(r, grpc.RpcError) else str(r)
            print(f"{node.name}: pull failed: {why}", file=sys.stderr)
    if failed:
        raise CliError(f"pull failed on {failed} of {len(nodes)} node"
                       f"{'s' if len(nodes) != 1 else ''}")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    problem = imageref.reference_problem(args.ref)
    if problem:
        raise CliError(problem)
    nodes = target_nodes(args)
    stubs = {n.name: agent_stub(args, n) for n in nodes}
    results = each_node(nodes, lambda n: stubs[n.name].RemoveImage(
        agent_pb2.RemoveImageRequest(ref=args.ref), timeout=60))
    removed = failed = 0
    for node in nodes:
        r = results[node.name]
        if isinstance(r, agent_pb2.RemoveImageReply):
            removed += 1
            print(f"{node.name}: removed {args.ref} ({r.layers_removed} layers, "
                  f"{format_bytes_short(r.bytes_freed)} freed)")
        elif isinstance(r, grpc.Call) and r.code() == grpc.StatusCode.NOT_FOUND and not args.node:
            continue      # not every node holds every image
        else:
            failed += 1
            why = describe_error(args, node, r) if isinstance(r, grpc.RpcError) else str(r)
            print(f"{node.name}: not removed: {why}", file=sys.stderr)
    if failed:
        raise CliError(f"image {args.ref} not removed on {failed} of {len(nodes)} node"
                       f"{'s' if len(nodes) != 1 else ''}")
    if not removed:
        raise CliError(f"image {args.ref} is on none of the nodes")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    nodes = target_nodes(args)
    stubs = {n.name: agent_stub(args, n) for n in nodes}
    results = each_node(nodes, lambda n: stubs[n.name].ListImages(agent_pb2.ListImagesRequest(),
                                                                 timeout=30))
    rows, docs, failed = [], [], 0
    for node in nodes:
        r = results[node.name]
        if not isinstance(r, agent_pb2.ImageList):
            failed += 1
            why = describe_error(args, node, r) if isinstance(r, grpc.RpcError) else str(r)
            print(f"{node.name}: failed: {why}", file=sys.stderr)
            continue
        for image in sorted(r.images, key=lambda i: i.name):
            rows.append([node.name, image.name.partition("@")[0], str(len(image.layers)),
                         format_bytes_short(image.size_bytes), output.age(image.created_unix_ms),
                         image.digest or "-"])
            docs.append({"node": node.name, **json_format.MessageToDict(image)})
    if args.output == "json":
        print(json.dumps({"items": docs}, indent=2))
    elif rows:
        header = ["NODE", "IMAGE", "LAYERS", "SIZE", "CREATED", "DIGEST"]
        # The digest column only when some image was pulled by one (docker images
        # --digests shows it on demand; here it shows itself when it says something).
        if all(row[-1] == "-" for row in rows):
            header, rows = header[:-1], [row[:-1] for row in rows]
        print(output.table(header, rows))
    elif not failed:
        print("No images found.")
    if failed:
        raise CliError(f"could not list images on {failed} of {len(nodes)} nodes")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("image", help="import, pull, list and remove images on the cluster's "
                                     "nodes")
    what = p.add_subparsers(dest="what", metavar="import | ls | pull | rm")
    what.required = True
    i = what.add_parser("import", help="load a docker save archive or OCI image layout "
                                       "onto every Ready node")
    i.add_argument("archive", metavar="FILE|DIR",
                   help="a tar (docker save, or an OCI layout; may be gzipped) or a directory")
    i.add_argument("--name", default="", metavar="NAME[:TAG]",
                   help="name the image (default: the archive's RepoTags / ref.name)")
    i.add_argument("--node", action="append", default=[], metavar="NODE",
                   help="only this node (repeatable)")
    i.add_argument("--timeout", type=float, default=None,
                   help="seconds each node may take (default: no limit)")
    i.add_argument("--max-size", default=DEFAULT_MAX_SIZE, metavar="SIZE",
                   help=f"refuse a bigger archive (default {DEFAULT_MAX_SIZE}; nodes have "
                        "their own limit)")
    i.add_argument("--progress", action="store_true",
                   help="show bytes sent on stderr also when it is not a terminal")
    i.set_defaults(fn=cmd_import)
    ls = what.add_parser("ls", help="list the images on each node")
    ls.add_argument("--node", action="append", default=[], metavar="NODE",
                    help="only this node (repeatable)")
    ls.add_argument("-o", "--output", choices=["table", "json"], default="table")
    ls.set_defaults(fn=cmd_ls)
    pl = what.add_parser("pull", help="pull an image from its registry onto every Ready node "
                                      "(or --node), ahead of the replicas that need it")
    pl.add_argument("ref", metavar="REGISTRY/REPO[:TAG][@DIGEST]")
    pl.add_argument("--node", action="append", default=[], metavar="NODE",
                    help="only this node (repeatable)")
    pl.add_argument("--timeout", type=float, default=1800.0,
                    help="seconds each node may take (default 1800)")
    pl.set_defaults(fn=cmd_pull)
    rm = what.add_parser("rm", help="remove an image and its unused layers from the nodes "
                                    "(refused on a node where a replica uses it)")
    rm.add_argument("ref", metavar="IMAGE")
    rm.add_argument("--node", action="append", default=[], metavar="NODE",
                    help="only this node (repeatable)")
    rm.set_defaults(fn=cmd_rm)

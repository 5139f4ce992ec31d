"""Builds image archives in memory for tests: layers, configs, `docker save` and OCI layouts.

Not a test module: unit, kernel and e2e tests import it (after putting
tests/ on sys.path). An archive is a dict {path: bytes}, so a test can break
it on purpose (drop a blob, edit a manifest) before writing it out as a tar
file (`write_tar`) or a directory (`write_dir`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


@dataclass
class Entry:
    """One tar member: file | dir | symlink | hardlink | chr | blk | fifo."""

    name: str
    kind: str = "file"
    data: bytes = b""
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    target: str = ""                 # symlink / hardlink target
    mtime: int = 1_700_000_000


def file(name: str, data: bytes | str = b"", mode: int = 0o644, **kw: Any) -> Entry:
    return Entry(name, "file", data.encode() if isinstance(data, str) else data, mode, **kw)


def directory(name: str, mode: int = 0o755, **kw: Any) -> Entry:
    return Entry(name, "dir", mode=mode, **kw)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, "symlink", mode=0o777, target=target)


def hardlink(name: str, target: str) -> Entry:
    return Entry(name, "hardlink", mode=0o644, target=target)


def whiteout(path: str) -> Entry:
    """The OCI/AUFS whiteout deleting `path` of the layers below."""
    head, _, base = path.rpartition("/")
    return file(f"{head}/.wh.{base}" if head else f".wh.{base}")


def opaque(directory_path: str) -> Entry:
    return file(f"{directory_path.rstrip('/')}/.wh..wh..opq")


_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
          "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE,
          "fifo": tarfile.FIFOTYPE}


def layer_tar(entries: list[Entry]) -> bytes:
    """An uncompressed layer tar holding `entries` in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = _TYPES[e.kind]
            info.mode = e.mode if e.mode is not None else (0o755 if e.kind == "dir" else 0o644)
            info.uid, info.gid, info.mtime = e.uid, e.gid, e.mtime
            info.linkname = e.target
            if e.kind in ("chr", "blk"):
                info.devmajor, info.devminor = 8, 0
            if e.kind == "file":
                info.size = len(e.data)
                tf.addfile(info, io.BytesIO(e.data))
            else:
                tf.addfile(info)
    return buf.getvalue()


def raw_member_tar(name: str, kind: bytes, size: int, data: bytes = b"") -> bytes:
    """A tar whose one header claims `size` bytes (for lying-size tests), then `data`."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    header = info.tobuf(format=tarfile.USTAR_FORMAT)
    pad = (-len(data)) % 512
    return header + data + b"\0" * pad + b"\0" * 1024


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zst(data: bytes) -> bytes:
    """zstd with a frame checksum, as `zstd` and skopeo write it."""
    import zstandard  # noqa: PLC0415 - only the tests of zstd layers need it
    return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class ImageSpec:
    """One image: its layers (uncompressed tars, bottom first) and config defaults."""

    layers: list[bytes]
    name: str | None = None                   # RepoTags[0] / ref.name annotation
    gzip_layers: list[bool] | None = None     # OCI: which layers to gzip
    zstd_layers: list[bool] | None = None     # OCI: which layers to zstd (needs zstandard)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] | None = None
    working_dir: str | None = None
    user: str | None = None
    created: str = "2024-05-06T07:08:09.123456789Z"
    architecture: str = "amd64"
    extra_config: dict[str, Any] = field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {}
        for key, value in (("Entrypoint", self.entrypoint), ("Cmd", self.cmd),
                           ("Env", self.env), ("WorkingDir", self.working_dir),
                           ("User", self.user)):
            if value is not None:
                cfg[key] = value
        return {"architecture": self.architecture, "os": "linux", "created": self.created,
                "config": cfg, "rootfs": {"type": "layers",
                                          "diff_ids": [sha(t) for t in self.layers]},
                **self.extra_config}


def _json(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True).encode()


def docker_archive(images: list[ImageSpec], blobs_layout: bool = False) -> dict[str, bytes]:
    """What `docker save` writes: legacy `<id>/layer.tar`, or Docker 25's blobs/sha256."""
    files: dict[str, bytes] = {}
    manifest = []
    for image in images:
        config = _json(image.config())
        config_hex = sha(config)[7:]
        config_path = f"blobs/sha256/{config_hex}" if blobs_layout else f"{config_hex}.json"
        files[config_path] = config
        paths = []
        for tar in image.layers:
            hexd = sha(tar)[7:]
            path = f"blobs/sha256/{hexd}" if blobs_layout else f"{hexd[:12]}/layer.tar"
            files[path] = tar
            paths.append(path)
        manifest.append({"Config": config_path, "RepoTags": [image.name] if image.name else None,
                         "Layers": paths})
    files["manifest.json"] = _json(manifest)
    return files


def oci_layout(images: list[ImageSpec]) -> dict[str, bytes]:
    """An OCI image layout: oci-layout, index.json, blobs/sha256/*."""
    files: dict[str, bytes] = {"oci-layout": _json({"imageLayoutVersion": "1.0.0"})}
    index: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}

    def blob(data: bytes) -> str:
        files[f"blobs/sha256/{sha(data)[7:]}"] = data
        return sha(data)

    for image in images:
        config = _json(image.config())
        layers = []
        for i, tar in enumerate(image.layers):
            zipped = bool(image.gzip_layers and image.gzip_layers[i])
            zstd_on = bool(image.zstd_layers and image.zstd_layers[i])
            data = zst(tar) if zstd_on else gz(tar) if zipped else tar
            media = OCI_LAYER_ZSTD if zstd_on else OCI_LAYER_GZIP if zipped else OCI_LAYER
            layers.append({"mediaType": media, "digest": blob(data), "size": len(data)})
        manifest = _json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                          "config": {"mediaType": OCI_CONFIG, "digest": blob(config),
                                     "size": len(config)},
                          "layers": layers})
        entry: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": blob(manifest),
                                 "size": len(manifest),
                                 "platform": {"os": "linux",
                                              "architecture": image.architecture}}
        if image.name:
            entry["annotations"] = {"org.opencontainers.image.ref.name": image.name}
        index["manifests"].append(entry)
    files["index.json"] = _json(index)
    return files


def write_tar(files: dict[str, bytes], path: str, compress: bool = False) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    with open(path, "wb") as f:
        f.write(gz(data) if compress else data)
    return path


def write_dir(files: dict[str, bytes], path: str) -> str:
    for name, data in files.items():
        target = os.path.join(path, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(data)
    return path

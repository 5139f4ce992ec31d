"""Reading an image archive's JSON: which images it holds and what their layers are.

- `docker save`: `manifest.json` lists images, each with a `Config` path (the
  image config JSON), `RepoTags` and `Layers` (paths of uncompressed layer
  tars: `<id>/layer.tar`, or `blobs/sha256/<hex>` since Docker 25).
- OCI image layout (image-spec `image-layout.md`): `oci-layout`, `index.json`
  naming manifests (or nested indexes) by descriptor, and content-addressed
  `blobs/sha256/<hex>`; each manifest names a config and layers by descriptor
  with a media type (`...layer.v1.tar`, `...tar+gzip`).

When both are present (Docker 25 writes both), `manifest.json` is used: it
carries the RepoTags. An index may hold several platforms; only manifests
for this machine (linux and its architecture) are taken. Every document
named by a digest is checked against it here, every blob is checked to be
present with the size its descriptor gives; layers are checked when they are
unpacked (archive.py). Unknown media types are refused, not guessed at.
"""

from __future__ import annotations

import json
import platform
import re
from dataclasses import dataclass
from typing import Any

from mctl.common.sha256 import sha256

from .source import ArchiveError, Limits, Source, archive_path

MANIFEST_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}
INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
CONFIG_TYPES = {
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
}
# Compression is read from the blob itself (gzip's or zstd's magic number), not trusted
# from the media type: Docker has labelled uncompressed layers as gzip.
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
}
ZSTD_LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
}
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"

_DIGEST = re.compile(r"\Asha256:[0-9a-f]{64}\Z")
_BLOB_PATH = re.compile(r"\A(?:blobs/sha256/)?([0-9a-f]{64})(?:\.json)?\Z")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
         "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


@dataclass
class LayerRef:
    path: str                  # blob path in the archive
    where: str                 # for messages: "layer 2 of 3 (blobs/sha256/...)"
    diff_id: str | None        # from the config: the uncompressed tar's digest
    blob_digest: str | None    # from the descriptor or the blob's name
    blob_size: int | None      # from the descriptor


@dataclass
class ImagePlan:
    where: str                 # "manifest.json image 1" / "index.json manifest 1"
    names: list[str]
    tag_only: str              # an OCI ref.name that is only a tag, for the error message
    config: dict[str, Any]
    layers: list[LayerRef]


class ManifestReader:
    def __init__(self, src: Source, label: str, limits: Limits) -> None:
        self.src = src
        self.label = label
        self.limits = limits

    def fail(self, where: str, problem: str) -> ArchiveError:
        return ArchiveError(f"{self.label}: {where}: {problem}")

    def digest(self, value: object, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(where, f"digest {value!r} is not a string")
        if not value.startswith("sha256:"):
            raise self.fail(where, f"unsupported digest algorithm in {value!r} (sha256 only)")
        if not _DIGEST.match(value):
            raise self.fail(where, f"malformed digest {value!r}")
        return value

    def json(self, path: str, where: str, digest: str | None = None,
             size: int | None = None) -> Any:
        actual = self.src.size(path)
        if actual is None:
            raise self.fail(where, f"{path} is not in the archive")
        if size is not None and actual != size:
            raise self.fail(where, f"{path} has {actual} bytes, its descriptor says {size}")
        if actual > self.limits.max_json_bytes:
            raise self.fail(where, f"{path} is {actual} bytes, over the limit of "
                                   f"{self.limits.max_json_bytes} for a JSON document")
        with self.src.open(path) as f:
            data = f.read()
        if digest is not None:
            got = "sha256:" + sha256(data).hexdigest()
            if got != digest:
                raise self.fail(where, f"{path}: digest mismatch: expected {digest}, "
                                       f"content is {got}")
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise self.fail(where, f"{path} is not valid JSON: {e}") from None

    def blob_path(self, digest: str) -> str:
        return "blobs/sha256/" + digest.split(":", 1)[1]

    def descriptor(self, d: object, where: str) -> tuple[str, str, int]:
        """(mediaType, digest, size) of an OCI descriptor."""
        if not isinstance(d, dict):
            raise self.fail(where, "descriptor is not an object")
        media = d.get("mediaType")
        if not isinstance(media, str) or not media:
            raise self.fail(where, "descriptor has no mediaType")
        digest = self.digest(d.get("digest"), where)
        size = d.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise self.fail(where, f"descriptor size {size!r} is not a byte count")
        return media, digest, size

    def diff_ids(self, config: object, where: str, layers: int) -> list[str] | None:
        if not isinstance(config, dict):
            raise self.fail(where, "the image config is not an object")
        rootfs = config.get("rootfs")
        if rootfs is None:
            return None
        ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(ids, list):
            raise self.fail(where, "config rootfs.diff_ids is not a list")
        if len(ids) != layers:
            raise self.fail(where, f"config lists {len(ids)} diff_ids for {layers} layers")
        return [self.digest(d, f"{where}: rootfs.diff_ids") for d in ids]

    def check_blob(self, layer: LayerRef) -> None:
        size = self.src.size(layer.path)
        if size is None:
            raise self.fail(layer.where, f"layer blob {layer.path} is not in the archive")
        if layer.blob_size is not None and size != layer.blob_size:
            raise self.fail(layer.where, f"{layer.path} has {size} bytes, its descriptor "
                                         f"says {layer.blob_size}")

    # -- docker save ------------------------------------------------------------------

    def docker(self) -> list[ImagePlan]:
        doc = self.json("manifest.json", "manifest.json")
        if not isinstance(doc, list) or not doc:
            raise self.fail("manifest.json", "expected a non-empty list of images")
        plans = []
        for i, entry in enumerate(doc, 1):
            where = f"manifest.json image {i}"
            if not isinstance(entry, dict):
                raise self.fail(where, "not an object")
            config_path = archive_path(entry.get("Config"), self.label, f"{where}: Config")
            named = _BLOB_PATH.match(config_path)
            config = self.json(config_path, where,
                               digest=f"sha256:{named.group(1)}" if named else None)
            paths = entry.get("Layers")
            if not isinstance(paths, list):
                raise self.fail(where, "Layers is not a list")
            tags = entry.get("RepoTags") or []
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise self.fail(where, "RepoTags is not a list of strings")
            ids = self.diff_ids(config, where, len(paths))
            layers = []
            for n, p in enumerate(paths):
                path = archive_path(p, self.label, f"{where}: Layers[{n}]")
                blob = _BLOB_PATH.match(path)
                layers.append(LayerRef(
                    path=path, where=f"{where}: layer {n + 1} of {len(paths)} ({path})",
                    diff_id=ids[n] if ids else None,
                    # The old `<id>/layer.tar` is named by no digest; its diff id checks it.
                    blob_digest=f"sha256:{blob.group(1)}" if blob and path.startswith("blobs/")
                    else None,
                    blob_size=None))
            plans.append(ImagePlan(where, list(tags), "", config, layers))
        return plans

    # -- OCI image layout ---------------------------------------------------------------

    def oci(self) -> list[ImagePlan]:
        layout = self.json("oci-layout", "oci-layout")
        version = layout.get("imageLayoutVersion") if isinstance(layout, dict) else None
        if not isinstance(version, str) or not version.startswith("1."):
            raise self.fail("oci-layout", f"unsupported imageLayoutVersion {version!r}")
        index = self.json("index.json", "index.json")
        plans: list[ImagePlan] = []
        others: list[str] = []
        self._index(index, "index.json", None, plans, others, depth=0)
        if not plans:
            want = f"linux/{host_arch()}"
            have = f" (it has {', '.join(sorted(set(others)))})" if others else ""
            raise self.fail("index.json", f"no image for {want}{have}")
        return plans

    def _index(self, index: object, where: str, top: dict[str, Any] | None,
               plans: list[ImagePlan], others: list[str], depth: int) -> None:
        if depth > 4:
            raise self.fail(where, "indexes nested more than 4 deep")
        if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
            raise self.fail(where, "expected an object with a manifests list")
        for i, d in enumerate(index["manifests"], 1):
            w = f"{where} manifest {i}"
            media, digest, size = self.descriptor(d, w)
            entry = top if top is not None else d
            if media in INDEX_TYPES:
                nested = self.json(self.blob_path(digest), w, digest, size)
                self._index(nested, f"{w} (index {digest[7:19]})", entry, plans, others,
                            depth + 1)
                continue
            if media not in MANIFEST_TYPES:
                raise self.fail(w, f"unknown media type {media!r}")
            plat = d.get("platform")
            if isinstance(plat, dict):
                os_arch = f"{plat.get('os')}/{plat.get('architecture')}"
                if os_arch != f"linux/{host_arch()}":
                    others.append(os_arch)
                    continue
            manifest = self.json(self.blob_path(digest), w, digest, size)
            plans.append(self._manifest(manifest, w, entry))

    def _manifest(self, manifest: object, where: str, entry: dict[str, Any]) -> ImagePlan:
        if not isinstance(manifest, dict):
            raise self.fail(where, "the manifest is not an object")
        media, digest, size = self.descriptor(manifest.get("config"), f"{where}: config")
        if media not in CONFIG_TYPES:
            raise self.fail(where, f"config media type {media!r} is not a container image")
        config = self.json(self.blob_path(digest), f"{where}: config", digest, size)
        descs = manifest.get("layers")
        if not isinstance(descs, list):
            raise self.fail(where, "layers is not a list")
        ids = self.diff_ids(config, where, len(descs))
        layers = []
        for n, d in enumerate(descs):
            w = f"{where}: layer {n + 1} of {len(descs)}"
            media, digest, size = self.descriptor(d, w)
            if media not in LAYER_TYPES and media not in ZSTD_LAYER_TYPES:
                raise self.fail(w, f"unknown layer media type {media!r}")
            path = self.blob_path(digest)
            layers.append(LayerRef(path=path, where=f"{w} ({digest[:19]})",
                                 diff_id=ids[n] if ids else None, blob_digest=digest,
                                 blob_size=size))
        annotations = entry.get("annotations") or {}
        names, tag_only = [], ""
        if isinstance(annotations, dict):
            full = annotations.get(CONTAINERD_NAME)
            ref = annotations.get(REF_NAME)
            if isinstance(full, str) and full:
                names = [full]
            elif isinstance(ref, str) and ref:
                # By the spec a ref.name is often just a tag ("latest", "1.0"):
                # only one with a "/" or ":" can name an image by itself.
                if "/" in ref or ":" in ref:
                    names = [ref]
                else:
                    tag_only = ref
        return ImagePlan(where, names, tag_only, config, layers)

    def plans(self) -> list[ImagePlan]:
        if self.src.size("manifest.json") is not None:
            plans = self.docker()
        elif self.src.size("oci-layout") is not None:
            plans = self.oci()
        else:
            raise ArchiveError(f"{self.label}: neither a docker save archive (no "
                               "manifest.json) nor an OCI image layout (no oci-layout)")
        for plan in plans:
            for layer in plan.layers:
                self.check_blob(layer)
        return plans


def host_arch() -> str:
    machine = platform.machine()
    return _ARCH.get(machine, machine)

"""The node's image store: content-addressed layers and the images made of them.

A layer is a directory tree, stored once under `layers/<sha256>` and never
changed after it is complete; an image is a small JSON record naming its
layers (bottom first) and its defaults (Entrypoint, Cmd, Env, WorkingDir,
User), as the OCI image config has them. Containers see an image's layers
through an overlay mount (see rootfs.py), so any number of containers share
one copy. Images other than busybox come from archives (archive.py).

`busybox` is always available: it is built from the host's static busybox
(Debian's busybox-static), one binary plus a link per applet.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

from mctl.common.sha256 import sha256

from .userslock import UsersLock

log = logging.getLogger(__name__)

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImageError(Exception):
    """An image is missing or cannot be built or read."""


@dataclass(frozen=True)
class Image:
    name: str
    layers: tuple[str, ...]            # digests, bottom first
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = "/"
    user: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    created_unix_ms: int = 0           # the config's `created`; 0 for busybox


def normalize_name(ref: str) -> str:
    """`busybox` and `busybox:latest` are the same image."""
    return ref if ":" in ref.rsplit("/", 1)[-1] else f"{ref}:latest"


class ImageStore:
    def __init__(self, root: str) -> None:
        self.root = root
        self.layers_dir = os.path.join(root, "layers")
        self.images_dir = os.path.join(root, "images")
        os.makedirs(self.layers_dir, exist_ok=True)
        os.makedirs(self.images_dir, exist_ok=True)
        # Layers keep their images' setuid-root files: no host user may reach them.
        os.chmod(self.layers_dir, 0o700)
        self._cache: dict[str, Image] = {}
        # Held by whoever asks which containers use an image and acts on the
        # answer: making a container from it (node.py) or removing it (`image
        # rm`, image GC). Else a container could be made from an image between
        # the check that found it unused and its removal. Makers hold it
        # shared (several containers are made at once), removers exclusive.
        self.users_lock = UsersLock()

    def layer_path(self, digest: str) -> str:
        return os.path.join(self.layers_dir, digest.replace(":", "_"))

    def blobs_path(self, digest: str) -> str:
        """Where the pulled, compressed blobs of layer `digest` are kept (pull.py)."""
        return os.path.join(self.root, "blobs", digest.replace(":", "_"))

    def get(self, ref: str) -> Image:
        name = normalize_name(ref)
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        path = os.path.join(self.images_dir, name.replace("/", "_") + ".json")
        try:
            with open(path) as f:
                doc = json.load(f)
        except FileNotFoundError:
            raise ImageError(f"image {ref!r} is not on this node") from None
        image = Image(
            name=name,
            layers=tuple(doc["layers"]),
            entrypoint=tuple(doc.get("entrypoint", ())),
            cmd=tuple(doc.get("cmd", ())),
            env=tuple(doc.get("env", ())),
            working_dir=doc.get("workingDir") or "/",
            user=doc.get("user", ""),
            created_unix_ms=int(doc.get("created", 0)),
        )
        for digest in image.layers:
            if not os.path.isdir(self.layer_path(digest)):
                raise ImageError(f"image {ref!r}: layer {digest} is missing")
        self._cache[name] = image
        return image

    def put(self, image: Image) -> None:
        doc = {
            "name": image.name,
            "layers": list(image.layers),
            "entrypoint": list(image.entrypoint),
            "cmd": list(image.cmd),
            "env": list(image.env),
            "workingDir": image.working_dir,
            "user": image.user,
            "created": image.created_unix_ms,
        }
        path = os.path.join(self.images_dir, image.name.replace("/", "_") + ".json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
        os.replace(tmp, path)
        self._cache[image.name] = image

    def _record_path(self, name: str) -> str:
        return os.path.join(self.images_dir, name.replace("/", "_") + ".json")

    def touch(self, ref: str) -> None:
        """Marks the image used now (a container was made from it): image GC goes by this."""
        try:
            os.utime(self._record_path(normalize_name(ref)))
        except FileNotFoundError:
            pass

    def last_used(self, ref: str) -> float:
        """When the image was last used (or stored), unix seconds; 0 if it is not here."""
        try:
            return os.stat(self._record_path(normalize_name(ref))).st_mtime
        except FileNotFoundError:
            return 0.0

    def pinned_digests(self, limit: int) -> list[str]:
        """The digests of the pinned images here (`NAME@sha256:...`), sorted: the `limit`
        most recently used. Read from the record file names: no record is opened."""
        found = []
        for entry in os.listdir(self.images_dir):
            name, at, digest = entry.removesuffix(".json").rpartition("@")
            if not at or not entry.endswith(".json") or not digest.startswith("sha256:"):
                continue
            try:
                found.append((os.stat(os.path.join(self.images_dir, entry)).st_mtime, digest))
            except FileNotFoundError:
                continue
        found.sort(reverse=True)
        return sorted({d for _, d in found[:limit]})

    def remove(self, ref: str) -> None:
        """Forgets the image record (its layers stay: see unused_layers)."""
        name = normalize_name(ref)
        self._cache.pop(name, None)
        try:
            os.unlink(os.path.join(self.images_dir, name.replace("/", "_") + ".json"))
        except FileNotFoundError:
            raise ImageError(f"image {ref!r} is not on this node") from None

    def unused_layers(self) -> list[str]:
        """Digests of complete layers no image record names (staging dirs are not layers)."""
        used = {d for image in self.list() for d in image.layers}
        return [entry.replace("_", ":", 1) for entry in sorted(os.listdir(self.layers_dir))
                if not entry.startswith(".") and entry.replace("_", ":", 1) not in used]

    def list(self) -> list[Image]:
        out = []
        for entry in sorted(os.listdir(self.images_dir)):
            if entry.endswith(".json"):
                try:
                    with open(os.path.join(self.images_dir, entry)) as f:
                        out.append(self.get(json.load(f)["name"]))
                except (ImageError, OSError, ValueError, KeyError) as e:
                    log.warning("skipping unreadable image record %s: %s", entry, e)
        return out

    def add_layer(self, digest: str, build: Callable[[str], None]) -> str:
        """Stores a layer made by `build(dir)` under `digest`, unless it is there.

        The layer is built in a temporary directory and renamed into place, so
        a crash leaves no half layer under a real digest.
        """
        final = self.layer_path(digest)
        if os.path.isdir(final):
            return final
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=self.layers_dir)
        try:
            build(tmp)
            os.chmod(tmp, 0o755)
            os.rename(tmp, final)
        except FileExistsError:
            shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not os.path.isdir(final):
                raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def ensure_busybox(self) -> Image:
        """Makes sure `busybox:latest` exists, built from the host's static busybox."""
        binary = next((p for p in BUSYBOX_CANDIDATES if os.path.isfile(p)), None)
        if binary is None:
            raise ImageError("no static busybox on this host (apt-get install busybox-static)")
        with open(binary, "rb") as f:
            data = f.read()
        applets = subprocess.run(
            [binary, "--list-full"], capture_output=True, text=True, check=True
        ).stdout.split()
        digest = "sha256:" + sha256(
            data + b"\0" + "\n".join(applets).encode() + _BASE_FILES_VERSION
        ).hexdigest()
        self.add_layer(digest, lambda d: _build_busybox_layer(d, data, applets))
        image = Image(
            name="busybox:latest",
            layers=(digest,),
            cmd=("sh",),
            env=(f"PATH={DEFAULT_PATH}",),
        )
        self.put(image)
        return image


# Bumped when the base files below change, so the digest changes with them.
_BASE_FILES_VERSION = b"base-files-1"


def _build_busybox_layer(root: str, binary: bytes, applets: list[str]) -> None:
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev",
              "root", "var", "run", "home"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    os.makedirs(os.path.join(root, "tmp"), exist_ok=True)
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    os.chmod(os.path.join(root, "root"), 0o700)
    path = os.path.join(root, "bin", "busybox")
    with open(path, "wb") as f:
        f.write(binary)
    os.chmod(path, 0o755)
    for applet in applets:
        link = os.path.join(root, applet)
        if applet == "bin/busybox" or os.path.lexists(link):
            continue
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink("/bin/busybox", link)
    files = {
        "etc/passwd": ("root:x:0:0:root:/root:/bin/sh\n"
                       "nobody:x:65534:65534:nobody:/home:/bin/false\n"),
        "etc/group": "root:x:0:\nnogroup:x:65534:\n",
        # Empty files, so the runtime has something to bind its own copy onto.
        "etc/hostname": "", "etc/hosts": "", "etc/resolv.conf": "",
    }
    for rel, text in files.items():
        with open(os.path.join(root, rel), "w") as f:
            f.write(text)

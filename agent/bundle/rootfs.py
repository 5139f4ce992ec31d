"""A bundle's root file system: put together from image layers, taken apart at teardown.

    lower/0..N-1   with a user namespace: idmapped mounts of the layers, top
                   first (idmap.py), so the container's root owns the image's
                   files; without one, the layers themselves are stacked
    upper/, work/  the container's own writable layer (overlay.py)
    rootfs/        the overlay the runtime pivots into

Taking apart is idempotent and safe after a half-finished assembly: each
step removes only what exists.
"""

from __future__ import annotations

import logging
import os
import time

from ..runtime import syscalls as sc
from ..runtime.oci import config as oci
from . import idmap, overlay

log = logging.getLogger(__name__)


def assemble(sys: sc.Syscalls, cid: str, layers: list[str], bundle: str,
             config: oci.Config) -> None:
    """Mounts the rootfs of `bundle` over `layers` (top first) for the container of `config`.

    With a user namespace (config's uid mappings) the layers are idmapped
    first and the upper dir belongs to the container's root.
    """
    owner = None
    if config.uid_mappings:
        layers = _idmapped_layers(sys, cid, layers, bundle, config)
        owner = (config.uid_mappings[0].host_id, config.gid_mappings[0].host_id)
    overlay.mount_overlay(sys, layers, os.path.join(bundle, "upper"),
                          os.path.join(bundle, "work"), os.path.join(bundle, "rootfs"),
                          owner=owner)


def _idmapped_layers(sys: sc.Syscalls, cid: str, layers: list[str], bundle: str,
                     config: oci.Config) -> list[str]:
    """The layers as the user namespace's root sees its own (idmap.py), or as they are.

    Where the kernel or the layers' file system cannot idmap, the
    container still runs, as before idmapped layers: image files show as
    65534 inside and are read-only to it.
    """
    t0 = time.perf_counter()
    try:
        mounted = idmap.mount_layers(sys, layers, os.path.join(bundle, idmap.LAYERS_DIR),
                                     config.uid_mappings, config.gid_mappings)
    except idmap.IdmapUnsupported as e:
        log.warning("container=%s no idmapped layers (%s): image files stay read-only "
                    "to its root", cid, e)
        return layers
    log.debug("container=%s idmapped %d layers ms=%.1f", cid, len(layers),
              (time.perf_counter() - t0) * 1000)
    return mounted


def take_apart(sys: sc.Syscalls, bundle: str) -> list[str]:
    """Unmounts the rootfs and the idmapped layers; returns what is still mounted in `bundle`.

    The caller removes the bundle only when nothing is: rmtree would go
    through a mount, and an idmapped layer is the image's own files.
    """
    # Unmount until nothing is left: a crashed earlier setup may have stacked two.
    while overlay.unmount(sys, os.path.join(bundle, "rootfs")):
        pass
    # The overlay's idmapped layers (user namespace), after the overlay.
    idmap.unmount_layers(sys, os.path.join(bundle, idmap.LAYERS_DIR))
    return overlay.mounts_under(bundle)

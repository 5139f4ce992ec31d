"""config.json for a replica: what the runtime is asked to run, from the workload and its image.

The workload (spec) says what the user asked for; the image fills in what it
left out (command, environment, working directory, user); the node adds its
own defaults (rlimits, the RuntimeDefault seccomp profile, the mounts every
container gets). The files the container sees at /etc/hostname, /etc/hosts
and /etc/resolv.conf are written into the bundle here and bound in.
"""

from __future__ import annotations

import logging
import os
import resource
from collections.abc import Mapping

from mctl.v1 import types_pb2

from .. import hosts
from ..idranges import IdRange
from ..images import user as imageuser
from ..images.store import DEFAULT_PATH, Image
from ..runtime import capabilities, seccomp
from ..runtime.oci import config as oci

log = logging.getLogger(__name__)

# Open files a container may have, soft and hard, unless the host allows
# fewer (fs.nr_open): Docker's default (containerd's LimitNOFILE).
DEFAULT_NOFILE = 1 << 20
# Annotation keys naming the replica a container runs (runc and crun keep them).
ANNOTATIONS = ("mctl.replica", "mctl.namespace", "mctl.uid", "mctl.node")


class BundleError(Exception):
    """The replica cannot be turned into a config.json; the message is for the user."""


def default_rlimits(nr_open_path: str = "/proc/sys/fs/nr_open",
                    status_path: str = "/proc/self/status") -> tuple[oci.Rlimit, ...]:
    """The rlimits of every container: RLIMIT_NOFILE as Docker sets it, if it can be set.

    Above fs.nr_open setrlimit fails for anyone; above the agent's own hard
    limit it fails without CAP_SYS_RESOURCE (a root confined by a container
    or a systemd unit may lack it), so the default stays within both.
    """
    nofile = DEFAULT_NOFILE
    try:
        with open(nr_open_path) as f:
            nofile = min(nofile, int(f.read()))
    except (OSError, ValueError):
        pass
    if not _has_capability(status_path, capabilities.CAPABILITIES["CAP_SYS_RESOURCE"]):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard != resource.RLIM_INFINITY and hard < nofile:
            log.warning("no CAP_SYS_RESOURCE: containers get RLIMIT_NOFILE %d, the agent's "
                        "own hard limit, not %d", hard, nofile)
            nofile = hard
    return (oci.Rlimit("RLIMIT_NOFILE", nofile, nofile),)


def _has_capability(status_path: str, number: int) -> bool:
    try:
        with open(status_path) as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> number & 1)
    except (OSError, ValueError):
        pass
    return False


def user_namespace(ids: IdRange | None) -> tuple[tuple[str, ...], tuple[oci.IdMapping, ...]]:
    """config.json's namespaces and id mappings: with `ids`, ids 0..size-1 inside are those."""
    if ids is None:
        return oci.DEFAULT_NAMESPACES, ()
    return ("user", *oci.DEFAULT_NAMESPACES), (oci.IdMapping(0, ids.start, ids.size),)


def seccomp_profile(choice: str, caps: tuple[str, ...]) -> seccomp.Profile | None:
    """securityContext.seccompProfile as config.json's linux.seccomp; None for Unconfined.

    "" is RuntimeDefault (common/spec.py stores the default so). The profile
    is compiled once per agent process (seccomp.parse keeps it), and the
    zygote has it warm too.
    """
    if choice == "Unconfined":
        return None
    if choice not in ("", "RuntimeDefault"):
        raise BundleError(f"securityContext.seccompProfile: unknown profile {choice!r}")
    arch = seccomp.native_arch()
    if not arch:
        raise BundleError(f"securityContext.seccompProfile RuntimeDefault: no system call "
                          f"table for {os.uname().machine}; use Unconfined")
    try:
        return seccomp.parse(seccomp.runtime_default(caps, arch))
    except (seccomp.ProfileError, seccomp.LibseccompError) as e:
        # A bug in the profile, never the user's; or a node without libseccomp.
        raise BundleError(f"securityContext.seccompProfile RuntimeDefault: {e}") from None


def resolv_conf(nameserver: str, namespace: str) -> str:
    """The container's resolv.conf: its node's DNS responder (agent/dns.py), or none.

    The search list makes `api` and `api.<namespace>` names of the
    workload `api` of the container's own namespace, and `api.<other>` one
    of another namespace. ndots:3 (Kubernetes uses 5, for its longer
    `svc.cluster.local`): a name with fewer than three dots tries the
    search list first, which covers our longest relative name,
    `<replica>.<workload>.<namespace>`, while `www.example.com` costs
    two quick local NXDOMAINs before it is asked as it is.
    """
    if not nameserver:
        # No network, no DNS: nothing would answer.
        return ""
    return (f"nameserver {nameserver}\n"
            f"search {namespace}.mctl mctl\n"
            "options ndots:3\n")


def write_etc(bundle: str, hostname: str, ip: str, replica_name: str,
              ids: IdRange | None, resolv: str = "") -> list[oci.Mount]:
    """Writes bundle/etc/{hostname,hosts,resolv.conf}; returns their bind mounts."""
    etc = os.path.join(bundle, "etc")
    os.makedirs(etc, exist_ok=True)
    files = {
        "hostname": f"{hostname}\n",
        # Peers are added by update_hosts once the scheduler tells them.
        "hosts": hosts.render(hostname, ip, (), replica_name),
        # Names of services, and the node's own resolvers for the rest;
        # peers of its own workload are in hosts as well.
        "resolv.conf": resolv,
    }
    mounts = []
    for name, text in files.items():
        path = os.path.join(etc, name)
        with open(path, "w") as f:
            f.write(text)
        if ids is not None:
            # As Docker with userns-remap: root in the container may edit them.
            os.chown(path, ids.start, ids.start)
        mounts.append(oci.Mount(f"/etc/{name}", "bind", path, ("bind", "rw")))
    return mounts


def build(replica: types_pb2.Replica, image: Image, layers: list[str], bundle: str, node: str,
          cgroups_path: str, rlimits: tuple[oci.Rlimit, ...], ip: str = "", netns: str = "",
          ids: IdRange | None = None, nameserver: str = "",
          env_from: Mapping[str, str] | None = None) -> oci.Config:
    """The container's config; writes its /etc files into `bundle` on the way.

    `layers` are the image's layer directories, top first (for its User);
    `netns` the path of the network namespace to join ("" for a new one with
    loopback only); `ids` the host ids of its user namespace, if it has one;
    `nameserver` its node's DNS responder ("" for none); `env_from` the
    values of env vars with valueFrom (volumes.environment), by name. The
    volumes' mounts are added by the caller once their sources exist
    (containers.py), after these.
    """
    spec = replica.spec
    if spec.command:
        args = list(spec.command) + list(spec.args)
    else:
        args = list(image.entrypoint) + (list(spec.args) or list(image.cmd))
    if not args:
        raise BundleError(f"image {spec.image!r} has no default command; set spec.command")
    try:
        # The image's User, looked up in its own /etc/passwd and /etc/group.
        uid, gid, groups = imageuser.resolve(image.user, layers)
    except imageuser.UserError as e:
        raise BundleError(f"image {spec.image!r}: {e}") from None
    env = dict(e.split("=", 1) for e in image.env if "=" in e)
    env.setdefault("PATH", DEFAULT_PATH)
    hostname = spec.hostname or replica.metadata.name
    env["HOSTNAME"] = hostname
    for var in spec.env:
        if var.HasField("value_from"):
            if env_from is None or var.name not in env_from:
                raise BundleError(f"env {var.name}: the value of its valueFrom is not known")
            env[var.name] = env_from[var.name]
        else:
            env[var.name] = var.value
    mounts = oci.default_mounts()
    mounts += write_etc(bundle, hostname, ip, replica.metadata.name, ids,
                        resolv_conf(nameserver, replica.metadata.namespace or "default"))
    res = spec.resources
    memory = res.memory_bytes or None
    meta = replica.metadata
    namespaces, mappings = user_namespace(ids)
    return oci.Config(
        args=tuple(args),
        env=tuple(f"{k}={v}" for k, v in env.items()),
        cwd=spec.working_dir or image.working_dir or "/",
        uid=uid, gid=gid, additional_gids=groups,
        hostname=hostname,
        root_readonly=spec.security_context.read_only_rootfs,
        mounts=tuple(mounts),
        cgroups_path=cgroups_path,
        resources=oci.Resources(
            memory_limit=memory,
            # Swap limit equal to the memory limit: no swap beyond it.
            memory_swap=memory,
            cpu_quota=res.cpu_millis * 100 if res.cpu_millis else None,
            cpu_period=100_000,
            pids_limit=res.pids or None,
        ),
        namespaces=namespaces,
        namespace_paths={"network": netns} if netns else {},
        uid_mappings=mappings, gid_mappings=mappings,
        rlimits=rlimits,
        seccomp=seccomp_profile(spec.security_context.seccomp_profile,
                                tuple(oci.DEFAULT_CAPABILITIES)),
        annotations=dict(zip(ANNOTATIONS, (meta.name, meta.namespace, meta.uid, node),
                             strict=True)),
    )

"""`mctl-runtime ps` and `features`: the read-only verbs containerd and podman ask.

- `ps [--format table|json] ID [-- PS ARGS]`: the processes in the
  container's cgroup, as runc's `ps`: `--format json` prints the host pids as
  a JSON array (what containerd's shim reads); the table is `ps -ef` (or the
  given ps arguments) cut to those pids, header kept.
- `features`: the runtime-spec's features document (features.md, runtime
  spec 1.1), saying what this runtime understands: the config.json versions,
  hook stages, mount options, namespaces, capabilities, cgroup versions and
  seccomp actions, operators and architectures it takes. Written from the
  tables the checks use, so it cannot drift from them.

Imported only by these two commands: `run` pays for none of it.
"""

from __future__ import annotations

import json
import subprocess

from .. import capabilities, rootfs
from . import cli_state
from . import config as oci

# The versions config.py's ociVersion check accepts (1.0.x to 1.2.x).
OCI_VERSION_MIN = "1.0.0"
OCI_VERSION_MAX = "1.2.0"


def container_pids(c: cli_state.Container) -> list[int]:
    """The host pids in the container's cgroup; the init alone if the cgroup is gone."""
    from ..cgroups import CgroupError, detect

    pids: list[int] = []
    if c.cgroup:
        try:
            pids = detect().pids(c.cgroup)
        except CgroupError:
            pids = []
    if not pids and c.status() in (cli_state.CREATED, cli_state.RUNNING):
        pids = [c.pid]
    return sorted(pids)


def ps_table(pids: list[int], ps_args: list[str]) -> str:
    """`ps` output (default `-ef`) with only the header and the lines of `pids`."""
    out = subprocess.run(["ps", *(ps_args or ["-ef"])], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise OSError(f"ps {' '.join(ps_args or ['-ef'])}: {out.stderr.strip()[-300:]}")
    lines = out.stdout.splitlines()
    if not lines:
        return ""
    header = lines[0].split()
    if "PID" not in header:
        raise OSError("ps: its output has no PID column (give -o pid,...)")
    column = header.index("PID")
    wanted = {str(p) for p in pids}
    kept = [line for line in lines[1:] if len(line.split()) > column
            and line.split()[column] in wanted]
    return "\n".join([lines[0], *kept]) + "\n"


def ps(root: str, cid: str, fmt: str, ps_args: list[str]) -> str:
    c = cli_state.load(root, cid)
    pids = container_pids(c)
    if fmt == "json":
        return json.dumps(pids) + "\n"
    return ps_table(pids, ps_args)


def features() -> dict[str, object]:
    """The features document (runtime-spec features.md)."""
    from ..lsm import apparmor_enabled, selinux_enabled
    from ..seccomp import profile

    mount_options = sorted({*rootfs._FLAG_OPTIONS, *rootfs.PROPAGATION,
                            *rootfs._IGNORED_OPTIONS})
    return {
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION_MAX,
        "hooks": list(oci.HOOK_STAGES),
        "mountOptions": mount_options,
        "linux": {
            "namespaces": list(oci.NAMESPACE_TYPES),
            "capabilities": sorted(capabilities.CAPABILITIES,
                                   key=capabilities.CAPABILITIES.__getitem__),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False},
            "seccomp": {
                "enabled": True,
                "actions": sorted(profile.ACTIONS),
                "operators": sorted(profile.OPERATORS),
                "archs": sorted(profile.ARCHITECTURES),
                "knownFlags": sorted(profile.FLAGS),
                "supportedFlags": sorted(profile.FLAGS),
            },
            "apparmor": {"enabled": apparmor_enabled()},
            "selinux": {"enabled": selinux_enabled()},
        },
    }


def features_json() -> str:
    return json.dumps(features(), indent=2) + "\n"


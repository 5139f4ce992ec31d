"""AppArmor and SELinux labels: process.apparmorProfile, process.selinuxLabel, linux.mountLabel.

Both Linux security modules take the label a process gets at its next
execve(2) from a file under /proc/self/attr (man 5 proc, /proc/pid/attr):
- AppArmor: `exec <profile>` written to /proc/self/attr/apparmor/exec
  (kernels with LSM stacking, 5.8+), else /proc/self/attr/exec; this is
  what libapparmor's aa_change_onexec(2) writes, and runc too;
- SELinux: the context written to /proc/self/attr/exec (setexeccon(3));
  linux.mountLabel becomes a `context="..."` option of the filesystems
  mounted for the container that take one (tmpfs, devpts; not proc, sysfs,
  mqueue, cgroup or binds, as runc).

The init writes the exec labels after the mounts, masked paths and sysctls,
just before it drops privileges (process.py), not right at exec: under
no_new_privs AppArmor allows only transitions that confine further, and the
attr files are root's until the process switches user, so both are set
while the init is still root, as runc does.

When the LSM is not enabled here the container is refused at create, before
anything is made, with the field named. runc 1.1.5 fails all three too, each
its own way (apparmorProfile: "write /proc/self/attr/exec: invalid argument"
from its init; selinuxLabel: "selinux label is specified in config, but
selinux is disabled or not supported"; mountLabel: the /dev tmpfs mount fails
EINVAL); crun 1.8.1 fails the first two and ignores mountLabel. Neither LSM
is enabled on the development machines, so only the refusal is tried there;
the writes are unit-tested against a fake /proc.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .oci.config import Config

# The filesystems a mount label does not apply to (runc passes no label for them).
_UNLABELED = frozenset({"bind", "proc", "sysfs", "mqueue", "cgroup", "cgroup2"})


def apparmor_enabled(sys_root: str = "/sys") -> bool:
    """AppArmor is loaded and on (runc's test: securityfs dir and the module parameter)."""
    if not os.path.isdir(f"{sys_root}/kernel/security/apparmor"):
        return False
    try:
        with open(f"{sys_root}/module/apparmor/parameters/enabled", "rb") as f:
            return f.read(1) == b"Y"
    except OSError:
        return False


def selinux_enabled(sys_root: str = "/sys", proc: str = "/proc") -> bool:
    """selinuxfs is mounted and this process has a label other than "kernel" (go-selinux's test)."""
    if not os.path.exists(f"{sys_root}/fs/selinux/enforce"):
        return False
    try:
        with open(f"{proc}/self/attr/current", "rb") as f:
            label = f.read().strip(b"\0\n ")
    except OSError:
        return False
    return label not in (b"", b"kernel")


def unavailable(config: Config, sys_root: str = "/sys", proc: str = "/proc") -> str:
    """Why the config's labels cannot be applied on this host ("" if they can)."""
    if config.apparmor_profile and not apparmor_enabled(sys_root):
        return (f"process.apparmorProfile: {config.apparmor_profile!r} given, but AppArmor "
                "is not enabled on this host")
    for field, label in (("process.selinuxLabel", config.selinux_label),
                         ("linux.mountLabel", config.mount_label)):
        if label and not selinux_enabled(sys_root, proc):
            return f"{field}: {label!r} given, but SELinux is not enabled on this host"
    return ""


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    except OSError as e:
        raise OSError(f"writing {text!r} to {path}: {e.strerror}") from None
    finally:
        os.close(fd)


def set_exec_labels(config: Config, proc: str = "/proc") -> None:
    """In the init: the AppArmor profile and SELinux label of the coming exec."""
    if config.apparmor_profile:
        path = f"{proc}/self/attr/apparmor/exec"
        if not os.path.exists(path):
            path = f"{proc}/self/attr/exec"   # before LSM stacking
        _write(path, f"exec {config.apparmor_profile}")
    if config.selinux_label:
        _write(f"{proc}/self/attr/exec", config.selinux_label)


def mount_data(fstype: str, data: str, label: str) -> str:
    """Mount data with linux.mountLabel's context option, for filesystems that take it."""
    if not label or fstype in _UNLABELED:
        return data
    option = f'context="{label}"'
    return f"{data},{option}" if data else option

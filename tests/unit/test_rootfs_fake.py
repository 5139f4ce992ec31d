"""rootfs and capabilities through the recording syscall fake (youki style).

The fake records every mount, umount, pivot_root, prctl and capset instead of
making it, so these tests pin the exact calls and flags of each setup step.
Only plain file-system work (makedirs, touching bind targets, chdir) really
happens, inside tmp_path.
"""

from __future__ import annotations

import errno
import os
import stat

import pytest

from mctl.agent.bundle import overlay
from mctl.agent.runtime import capabilities, rootfs
from mctl.agent.runtime import syscalls as sc
from mctl.agent.runtime.oci import config as oci
from mctl.agent.runtime.oci.config import Config, Mount


@pytest.fixture
def fake():
    return sc.RecordingSyscalls()


@pytest.fixture
def no_devices(monkeypatch, fake):
    """Replaces the /dev nodes' bind mounts by a marker in the same call list (keeps order)."""
    monkeypatch.setattr(rootfs, "_make_devices",
                        lambda sys, root: fake.calls.append(("devices", root)))


def mounts(fake):
    return [c for c in fake.calls if c[0] == "mount"]


# -- split_options ---------------------------------------------------------------


@pytest.mark.parametrize(("options", "flags", "data"), [
    ((), 0, ""),
    (("nosuid", "noexec", "nodev"), sc.MS_NOSUID | sc.MS_NOEXEC | sc.MS_NODEV, ""),
    (("ro",), sc.MS_RDONLY, ""),
    (("rw",), 0, ""),
    (("noatime", "strictatime"), sc.MS_NOATIME | sc.MS_STRICTATIME, ""),
    (("bind",), sc.MS_BIND, ""),
    (("rbind",), sc.MS_BIND | sc.MS_REC, ""),
    (("private", "rprivate", "slave", "rslave"), 0, ""),
    (("nosuid", "mode=755", "size=65536k"), sc.MS_NOSUID, "mode=755,size=65536k"),
    (("newinstance", "ptmxmode=0666", "mode=0620"), 0, "newinstance,ptmxmode=0666,mode=0620"),
])
def test_split_options(options, flags, data):
    assert rootfs.split_options(options) == (flags, data)


def test_split_options_keeps_data_order_around_flags():
    assert rootfs.split_options(("b=2", "ro", "a=1", "nodev")) == (
        sc.MS_RDONLY | sc.MS_NODEV, "b=2,a=1")


# -- mount_overlay / unmount -----------------------------------------------------


def test_mount_overlay_lists_top_layer_first(fake, tmp_path):
    top, middle, bottom = (str(tmp_path / n) for n in ("l3", "l2", "l1"))
    upper, work, target = (str(tmp_path / "b" / n) for n in ("upper", "work", "rootfs"))
    overlay.mount_overlay(fake, [top, middle, bottom], upper, work, target)
    assert fake.calls == [(
        "mount", "overlay", target, "overlay", 0,
        f"lowerdir={top}:{middle}:{bottom},upperdir={upper},workdir={work}",
    )]
    for d in (upper, work, target):
        assert os.path.isdir(d)


def test_mount_overlay_single_layer(fake, tmp_path):
    overlay.mount_overlay(fake, ["/layers/a"], str(tmp_path / "u"), str(tmp_path / "w"),
                         str(tmp_path / "r"))
    data = fake.calls[0][5]
    assert data.startswith("lowerdir=/layers/a,upperdir=")


def test_unmount_detaches(fake):
    assert overlay.unmount(fake, "/b/rootfs") is True
    assert fake.calls == [("umount", "/b/rootfs", sc.MNT_DETACH)]


class FailingUmount(sc.RecordingSyscalls):
    def __init__(self, err: int) -> None:
        super().__init__()
        self.err = err

    def umount(self, target: str, flags: int = 0) -> None:
        super().umount(target, flags)
        raise sc.SyscallError(self.err, os.strerror(self.err))


@pytest.mark.parametrize("err", [errno.EINVAL, errno.ENOENT])
def test_unmount_of_nothing_is_false(err):
    assert overlay.unmount(FailingUmount(err), "/b/rootfs") is False


def test_unmount_other_errors_raise():
    with pytest.raises(OSError) as info:
        overlay.unmount(FailingUmount(errno.EBUSY), "/b/rootfs")
    assert info.value.errno == errno.EBUSY


def test_mounts_under_reads_mount_points_and_unescapes_them(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(
        "1 0 254:0 / / rw - ext4 /dev/vda rw\n"
        "2 1 0:50 / /b/rootfs rw - overlay overlay rw,lowerdir=/b/lower/0\n"
        "3 1 254:0 /layers/x /b/lower/0 rw,idmapped - ext4 /dev/vda rw\n"
        "4 1 254:0 / /b2/rootfs rw - overlay overlay rw\n"
        "5 1 254:0 / /b/with\\040space rw - tmpfs tmpfs rw\n")
    assert overlay.mounts_under("/b", str(info)) == [
        "/b/rootfs", "/b/lower/0", "/b/with space"]
    assert overlay.mounts_under("/b/lower", str(info)) == ["/b/lower/0"]
    assert overlay.mounts_under("/c", str(info)) == []


class UmountsOnce(sc.RecordingSyscalls):
    """Each target is a mount point once: the second umount finds nothing (EINVAL)."""

    def umount(self, target: str, flags: int = 0) -> None:
        done = any(c[:2] == ("umount", target) for c in self.calls)
        super().umount(target, flags)
        if done:
            raise sc.SyscallError(errno.EINVAL, os.strerror(errno.EINVAL))


def test_unmount_layers_detaches_each_numbered_layer(tmp_path):
    from mctl.agent.bundle import idmap

    for name in ("0", "1", "notes"):
        (tmp_path / "lower" / name).mkdir(parents=True)
    fake = UmountsOnce()
    idmap.unmount_layers(fake, str(tmp_path / "lower"))
    targets = sorted({c[1] for c in fake.calls})
    assert targets == [str(tmp_path / "lower" / "0"), str(tmp_path / "lower" / "1")]
    assert all(c[2] == sc.MNT_DETACH for c in fake.calls)
    # No directory (a container without a user namespace): nothing to do.
    fake = UmountsOnce()
    idmap.unmount_layers(fake, str(tmp_path / "none"))
    assert fake.calls == []


# -- prepare ----------------------------------------------------------------------


def test_prepare_default_mounts_exact_calls(fake, no_devices, tmp_path):
    root = str(tmp_path / "rootfs")
    os.mkdir(root)
    rootfs.prepare(fake, root, Config(args=("sh",), mounts=tuple(oci.default_mounts())))

    def at(dest):
        return os.path.join(root, dest)

    assert fake.calls == [
        # Nothing may propagate back to the host: everything private first.
        ("mount", "", "/", "", sc.MS_REC | sc.MS_PRIVATE, ""),
        # The rootfs becomes a mount point of its own (pivot_root needs one),
        # where no device node can be opened.
        ("mount", root, root, "", sc.MS_BIND | sc.MS_REC, ""),
        ("mount", "", root, "", sc.MS_BIND | sc.MS_REMOUNT | sc.MS_NODEV, ""),
        ("mount", "proc", at("proc"), "proc", sc.MS_NOSUID | sc.MS_NOEXEC | sc.MS_NODEV, ""),
        # /dev is nodev whatever config.json says: its nodes are bind mounts.
        ("mount", "tmpfs", at("dev"), "tmpfs", sc.MS_NOSUID | sc.MS_STRICTATIME | sc.MS_NODEV,
         "mode=755,size=65536k"),
        ("devices", root),  # device nodes right after the /dev tmpfs, before /dev/pts
        ("mount", "devpts", at("dev/pts"), "devpts", sc.MS_NOSUID | sc.MS_NOEXEC,
         "newinstance,ptmxmode=0666,mode=0620"),
        ("mount", "shm", at("dev/shm"), "tmpfs", sc.MS_NOSUID | sc.MS_NOEXEC | sc.MS_NODEV,
         "mode=1777,size=65536k"),
        ("mount", "mqueue", at("dev/mqueue"), "mqueue",
         sc.MS_NOSUID | sc.MS_NOEXEC | sc.MS_NODEV, ""),
        ("mount", "sysfs", at("sys"), "sysfs",
         sc.MS_NOSUID | sc.MS_NOEXEC | sc.MS_NODEV | sc.MS_RDONLY, ""),
    ]
    for d in ("proc", "dev", "dev/pts", "dev/shm", "dev/mqueue", "sys"):
        assert os.path.isdir(at(d)), d


def test_prepare_bind_mounts(fake, no_devices, tmp_path):
    root = str(tmp_path / "rootfs")
    os.mkdir(root)
    src_file = tmp_path / "hosts"
    src_file.write_text("127.0.0.1 localhost\n")
    src_dir = tmp_path / "data"
    src_dir.mkdir()
    config = Config(args=("sh",), mounts=tuple(oci.default_mounts()) + (
        Mount("/etc/hosts", "bind", str(src_file), ("bind", "rw")),
        Mount("/data", "bind", str(src_dir), ("rbind", "ro", "nosuid")),
        Mount("/opt/x", "none", str(src_dir), ("bind",)),
    ))
    rootfs.prepare(fake, root, config)
    hosts, data, opt = (os.path.join(root, p) for p in ("etc/hosts", "data", "opt/x"))
    assert mounts(fake)[-4:] == [
        ("mount", str(src_file), hosts, "", sc.MS_BIND, ""),
        ("mount", str(src_dir), data, "", sc.MS_BIND | sc.MS_REC | sc.MS_RDONLY | sc.MS_NOSUID,
         ""),
        # A bind ignores MS_RDONLY until remounted read-only.
        ("mount", "", data, "",
         sc.MS_BIND | sc.MS_REC | sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_REMOUNT, ""),
        # The "bind" option makes a bind mount whatever the type says.
        ("mount", str(src_dir), opt, "", sc.MS_BIND, ""),
    ]
    # A file source gets a file to bind onto, a directory source a directory.
    assert os.path.isfile(hosts)
    assert os.path.isdir(data)
    assert os.path.isdir(opt)


def test_prepare_bind_keeps_existing_target_file(fake, no_devices, tmp_path):
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("image\n")
    src = tmp_path / "hostname"
    src.write_text("box\n")
    config = Config(args=("sh",), mounts=tuple(oci.default_mounts()) + (
        Mount("/etc/hostname", "bind", str(src), ("bind",)),))
    rootfs.prepare(fake, str(root), config)
    assert (root / "etc" / "hostname").read_text() == "image\n"


def test_prepare_requires_a_dev_tmpfs(fake, no_devices, tmp_path):
    mounts_without_dev = tuple(m for m in oci.default_mounts() if m.destination != "/dev")
    with pytest.raises(OSError) as info:
        rootfs.prepare(fake, str(tmp_path), Config(args=("sh",), mounts=mounts_without_dev))
    assert info.value.errno == errno.EINVAL
    assert "/dev" in str(info.value)


def test_make_devices_binds_the_hosts_default_nodes(fake, tmp_path):
    (tmp_path / "dev").mkdir()
    old = os.umask(0o077)  # the mode must not depend on the caller's umask
    try:
        rootfs._make_devices(fake, str(tmp_path))
    finally:
        os.umask(old)
    dev = tmp_path / "dev"
    names = ["null", "zero", "full", "random", "urandom", "tty"]
    # runc's default nodes, each a bind of the host's onto an empty file.
    assert fake.calls == [("mount", f"/dev/{n}", str(dev / n), "", sc.MS_BIND, "")
                          for n in names]
    for name in names:
        st = os.lstat(dev / name)
        assert stat.S_ISREG(st.st_mode) and st.st_size == 0, name
    assert os.readlink(dev / "fd") == "/proc/self/fd"
    assert os.readlink(dev / "stdout") == "/proc/self/fd/1"
    assert os.readlink(dev / "ptmx") == "pts/ptmx"


def test_prepare_skips_premounted_destinations(fake, no_devices, tmp_path):
    root = str(tmp_path / "rootfs")
    os.mkdir(root)
    rootfs.prepare(fake, root, Config(args=("sh",), mounts=tuple(oci.default_mounts())),
                   premounted=("/sys",))
    assert [c[2] for c in mounts(fake) if c[3] == "sysfs"] == []
    assert ("mount", "proc", os.path.join(root, "proc"), "proc",
            sc.MS_NOSUID | sc.MS_NOEXEC | sc.MS_NODEV, "") in fake.calls


def test_premount_sysfs_mounts_only_sysfs_privately(fake, tmp_path):
    root = str(tmp_path / "rootfs")
    os.mkdir(root)
    config = Config(args=("sh",), mounts=tuple(oci.default_mounts()))
    assert rootfs.premount_sysfs(fake, root, config) == ("/sys",)
    assert fake.calls == [
        ("mount", "", "/", "", sc.MS_REC | sc.MS_PRIVATE, ""),
        ("mount", "sysfs", os.path.join(root, "sys"), "sysfs",
         sc.MS_NOSUID | sc.MS_NOEXEC | sc.MS_NODEV | sc.MS_RDONLY, ""),
    ]


def test_make_mount_points_skips_nested_and_keeps_files(tmp_path):
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hosts").write_text("image\n")
    src = tmp_path / "hostname"
    src.write_text("box\n")
    config = Config(args=("sh",), mounts=tuple(oci.default_mounts()) + (
        Mount("/etc/hostname", "bind", str(src), ("bind",)),
        Mount("/etc/hosts", "bind", str(src), ("bind",)),
        Mount("/data", "bind", str(tmp_path), ("rbind",)),
    ))
    rootfs.make_mount_points(str(root), config)
    for d in ("proc", "dev", "sys", "data"):
        assert (root / d).is_dir(), d
    # Inside the /dev tmpfs: made later, by the container.
    assert not (root / "dev" / "pts").exists()
    assert (root / "etc" / "hostname").read_text() == ""
    assert (root / "etc" / "hosts").read_text() == "image\n"


# -- pivot ---------------------------------------------------------------------------


@pytest.fixture
def chdirs(monkeypatch, fake):
    """Records chdir into the same call list instead of moving the test process."""
    monkeypatch.setattr(os, "chdir", lambda path: fake.calls.append(("chdir", path)))


def test_pivot(fake, chdirs):
    rootfs.pivot(fake, "/b/rootfs", readonly=False)
    assert fake.calls == [
        ("chdir", "/b/rootfs"),
        ("pivot_root", ".", "."),
        ("umount", ".", sc.MNT_DETACH),
        ("chdir", "/"),
    ]


def test_pivot_readonly_remounts_root(fake, chdirs):
    rootfs.pivot(fake, "/b/rootfs", readonly=True)
    assert fake.calls[:4] == [
        ("chdir", "/b/rootfs"), ("pivot_root", ".", "."), ("umount", ".", sc.MNT_DETACH),
        ("chdir", "/"),
    ]
    assert fake.calls[4:] == [
        ("mount", "", "/", "", sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_REC
         | sc.MS_NODEV, ""),
    ]


def test_pivot_really_changes_directory(fake, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # restored afterwards
    seen = []
    real_pivot = fake.pivot_root
    fake.pivot_root = lambda new, old: (seen.append(os.getcwd()), real_pivot(new, old))
    rootfs.pivot(fake, str(tmp_path), readonly=False)
    assert seen == [str(tmp_path)]
    assert os.getcwd() == "/"


# -- mask_paths ------------------------------------------------------------------------


def test_mask_paths_files_dirs_and_missing(fake, tmp_path):
    a_dir = tmp_path / "acpi"
    a_dir.mkdir()
    a_file = tmp_path / "kcore"
    a_file.write_text("")
    dangling = tmp_path / "link"
    dangling.symlink_to(tmp_path / "nowhere")
    missing = tmp_path / "timer_stats"
    ro_dir = tmp_path / "sys"
    ro_dir.mkdir()
    config = Config(args=("sh",),
                    masked_paths=(str(a_dir), str(missing), str(a_file), str(dangling)),
                    readonly_paths=(str(missing), str(ro_dir)))
    rootfs.mask_paths(fake, config)
    ro = sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV \
        | sc.MS_NOEXEC
    assert fake.calls == [
        ("mount", "tmpfs", str(a_dir), "tmpfs", sc.MS_RDONLY, ""),
        ("mount", "/dev/null", str(a_file), "", sc.MS_BIND, ""),
        ("mount", "/dev/null", str(dangling), "", sc.MS_BIND, ""),
        ("mount", str(ro_dir), str(ro_dir), "", sc.MS_BIND | sc.MS_REC, ""),
        ("mount", str(ro_dir), str(ro_dir), "", ro, ""),
    ]


def test_mask_paths_nothing_to_do(fake):
    rootfs.mask_paths(fake, Config(args=("sh",), masked_paths=(), readonly_paths=()))
    assert fake.calls == []


def test_mask_paths_default_lists_skip_missing(fake, monkeypatch):
    present = {"/proc/kcore", "/proc/acpi", "/proc/sys"}
    monkeypatch.setattr(rootfs.os.path, "lexists", lambda p: p in present)
    monkeypatch.setattr(rootfs.os.path, "isdir", lambda p: p in {"/proc/acpi", "/proc/sys"})
    rootfs.mask_paths(fake, Config(args=("sh",)))
    monkeypatch.undo()
    assert [c[2] for c in fake.calls] == ["/proc/acpi", "/proc/kcore", "/proc/sys", "/proc/sys"]


# -- capabilities ------------------------------------------------------------------------


def test_mask_of_known_numbers():
    assert capabilities.mask_of([]) == 0
    assert capabilities.mask_of(["CAP_CHOWN"]) == 1
    assert capabilities.mask_of(["CAP_SYS_ADMIN"]) == 1 << 21
    assert capabilities.mask_of(("CAP_KILL", "CAP_KILL")) == 1 << 5
    assert capabilities.mask_of(["CAP_CHECKPOINT_RESTORE"]) == 1 << 40


def test_default_capabilities_are_dockers_mask():
    # The well-known CapEff of a default Docker container.
    assert capabilities.mask_of(oci.DEFAULT_CAPABILITIES) == 0xA80425FB


@pytest.mark.parametrize("name", ["CAP_FOO", "cap_chown", "CHOWN", ""])
def test_mask_of_rejects_unknown_names(name):
    with pytest.raises(ValueError) as info:
        capabilities.mask_of(["CAP_CHOWN", name])
    assert repr(name) in str(info.value)


def test_capability_numbers_are_dense():
    assert sorted(capabilities.CAPABILITIES.values()) == list(range(41))


def test_drop_bounding_drops_everything_else_in_order(fake):
    keep = capabilities.mask_of(["CAP_CHOWN", "CAP_KILL", "CAP_SETFCAP"])
    capabilities.drop_bounding(fake, keep, top=40)
    dropped = [n for n in range(41) if n not in (0, 5, 31)]
    assert fake.calls == [("prctl", sc.PR_CAPBSET_DROP, n) for n in dropped]


def test_drop_bounding_respects_kernel_top(fake):
    capabilities.drop_bounding(fake, 0, top=3)
    assert fake.calls == [("prctl", sc.PR_CAPBSET_DROP, n) for n in range(4)]


def test_drop_bounding_keep_all_drops_nothing(fake):
    capabilities.drop_bounding(fake, (1 << 41) - 1, top=40)
    assert fake.calls == []


def test_set_capabilities(fake):
    keep = capabilities.mask_of(oci.DEFAULT_CAPABILITIES)
    capabilities.set_capabilities(fake, keep, keep, 0)
    assert fake.calls == [("capset", keep, keep, 0)]


def test_last_cap_reads_the_kernel():
    with open("/proc/sys/kernel/cap_last_cap") as f:
        assert capabilities.last_cap() == int(f.read())


def test_secure_join_keeps_symlinks_inside_the_root(tmp_path):
    from mctl.agent.runtime.rootfs import secure_join
    root = tmp_path / "rootfs"
    (root / "real" / "etc").mkdir(parents=True)
    (root / "abs").symlink_to("/real/etc")             # absolute: from the rootfs
    (root / "escape").symlink_to("/")                  # the host's / would be outside
    (root / "up").symlink_to("../../../../..")         # climbs past the root
    (root / "loop").symlink_to("loop")
    r = str(root)
    assert secure_join(r, "/abs/hostname") == f"{r}/real/etc/hostname"
    assert secure_join(r, "/escape/etc/hostname") == f"{r}/etc/hostname"
    assert secure_join(r, "/up/etc/passwd") == f"{r}/etc/passwd"
    assert secure_join(r, "/../../etc") == f"{r}/etc"
    assert secure_join(r, "/real/./etc/../etc") == f"{r}/real/etc"
    import pytest
    with pytest.raises(OSError, match="too many symlinks"):
        secure_join(r, "/loop/x")

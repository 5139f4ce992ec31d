"""User namespaces through the real native runtime (securityContext.userNamespace).

Needs root. Each container gets a range of host ids from a real IdRanges
pool (boxes.TEST_ID_BASE upward) and config.json's user namespace with
uid/gid mappings, as the agent writes it; the tests look from inside (id,
/proc/self/uid_map, what root may do) and from the host (the owner of what
it wrote on disk, its processes' host uid). A plain container running the
same command is the control wherever "it fails" could mean "it never ran".
"""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys
from collections.abc import Iterator

import pytest
from boxes import TEST_ID_BASE, Box, Boxes, status_field

from mctl.agent import containers
from mctl.agent.bundle import overlay
from mctl.agent.containers import ContainerError, ContainerManager
from mctl.agent.idranges import IdRanges
from mctl.agent.runtime import capabilities, userns
from mctl.agent.runtime.api import StartError
from mctl.agent.runtime.choose import make_runtime
from mctl.agent.runtime.oci import config as oci
from mctl.agent.runtime.oci.client import RuntimeNotFound
from mctl.common import netns, procfs
from mctl.v1 import types_pb2

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces, mounts, cgroups"),
]


@pytest.fixture(scope="module")
def boxes() -> Iterator[Boxes]:
    reason = userns.unavailable()
    if reason:
        pytest.skip(reason)
    b = Boxes("userns")
    try:
        yield b
    finally:
        assert b.close() == {}


@pytest.fixture
def run(boxes: Boxes) -> Iterator:
    made: list[Box] = []

    def start(command: str, **options: object) -> Box:
        box = boxes.run(command, **options)
        made.append(box)
        return box

    yield start
    for box in made:
        boxes.teardown(box)


def host_ids(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/status") as f:
        text = f.read()
    return int(status_field(text, "Uid").split()[0]), int(status_field(text, "Gid").split()[0])


def test_root_inside_is_the_ranges_first_id_outside(run):
    box = run("id; cat /proc/self/uid_map /proc/self/gid_map; sleep 30", userns=True)
    assert box.ids is not None
    lines = _wait_lines(box, 3)
    assert lines[0].startswith("uid=0(root) gid=0(root)"), lines
    # One range: 0..65535 inside is the container's own ids on the host.
    assert lines[1].split() == ["0", str(box.ids.start), "65536"]
    assert lines[2].split() == ["0", str(box.ids.start), "65536"]
    # From the host, its pid 1 is that unprivileged uid, not root.
    assert host_ids(box.init_pid) == (box.ids.start, box.ids.start)


def test_files_made_inside_are_owned_by_the_mapped_host_ids(run):
    box = run("set -e; echo data > /made; mkdir -p /new/dir; touch /new/dir/f; "
              "touch /made-by-1000; chown 1000:1000 /made-by-1000; "
              "ls -ln /made | awk '{print $3, $4}'", userns=True)
    assert box.wait_exit()["exit_code"] == 0, box.output()
    start = box.ids.start
    upper = box.path("upper")
    for path in ("made", "new/dir", "new/dir/f"):
        st = os.stat(os.path.join(upper, path))
        assert (st.st_uid, st.st_gid) == (start, start), path
    # uid 1000 inside is start + 1000 on disk.
    st = os.stat(os.path.join(upper, "made-by-1000"))
    assert (st.st_uid, st.st_gid) == (start + 1000, start + 1000)
    # Inside, root sees its own file as its own.
    assert box.stdout() == "0 0\n"


def test_host_root_only_operations_fail(boxes, run):
    # The capabilities are Docker's default set in both containers; the
    # user namespace makes them count only for what it owns.
    script = ("grep CapEff /proc/self/status; "
              "mknod /dev/made c 1 3 && echo mknod=ok || echo mknod=denied; "
              "echo '#' >> /etc/passwd && echo write=ok || echo write=denied; "
              "chown 0:0 /etc/group && echo chown=ok || echo chown=denied; "
              "ls -ln /etc/group | awk '{print $3}'")
    plain = run(script)
    mapped = run(script, userns=True)
    plain.wait_exit()
    mapped.wait_exit()
    mask = capabilities.mask_of(oci.DEFAULT_CAPABILITIES)
    for box in (plain, mapped):
        assert int(status_field(box.stdout(), "CapEff"), 16) == mask
    # Without a user namespace root may do all of it (so the commands work) ...
    assert plain.stdout().splitlines()[1:] == ["mknod=ok", "write=ok", "chown=ok", "0"]
    # ... with one, root is no one to the host's devices; the image's files
    # are its own only through the idmapped layers (its root is the host
    # root's files there), so writing and chowning them works.
    assert mapped.stdout().splitlines()[1:] == ["mknod=denied", "write=ok", "chown=ok", "0"]
    assert "Operation not permitted" in mapped.output()


def test_hostname_proc_and_sys_belong_to_the_container(run):
    # The runtime set the hostname from inside the user namespace (which
    # owns the uts namespace), and mounted /proc and /sys there.
    box = run("hostname; cat /proc/sys/kernel/hostname; ls /proc | grep -c '^[0-9]'; "
              "ls /sys/class/net; touch /sys/x 2>&1", userns=True, hostname="uns-box")
    box.wait_exit()
    out = box.output().splitlines()
    assert out[:2] == ["uns-box", "uns-box"]
    assert int(out[2]) <= 3           # sh, ls, grep: its own pid namespace
    assert out[3] == "lo"             # its own network namespace's sysfs
    assert "Read-only file system" in out[4]


@pytest.fixture
def joined_netns() -> Iterator[str]:
    """A named network namespace of the host's, as the agent makes per container."""
    name = f"mctl-ktest-{secrets.token_hex(4)}"
    path = netns.create(name)
    yield path
    netns.remove(name)
    assert not netns.exists(name)


def test_joined_network_namespace_gets_its_sysfs_before_the_user_namespace(run, joined_netns):
    # The host owns the agent's network namespace, so root in the container
    # could not mount its sysfs: the runtime mounts it first (premount_sysfs).
    ns_inode = os.stat(joined_netns).st_ino
    box = run("readlink /proc/self/ns/net; ls /sys/class/net; "
              "mount -o remount,rw /sys 2>&1; ip link add mctl-kx type dummy 2>&1; true",
              userns=True, namespace_paths={"network": joined_netns})
    box.wait_exit()
    out = box.output().splitlines()
    assert out[0] == f"net:[{ns_inode}]"
    assert out[1] == "lo"
    assert "ermission denied" in out[2] or "not permitted" in out[2], out
    # The namespace is the host's: root in the container may not change it.
    assert "not permitted" in out[3], out


def test_exec_joins_the_user_namespace(boxes, run):
    box = run("sleep 30", userns=True, hostname="exec-box")
    _wait_lines(box, 0)
    proc = subprocess.run(
        [sys.executable, "-m", "mctl.agent.runtime.nsexec", "--pid", str(box.init_pid),
         "--bundle", box.bundle, "--", "sh", "-c",
         "id; cat /proc/self/uid_map; hostname; echo $$; touch /by-exec; exit 7"],
        capture_output=True, text=True, timeout=20)
    assert proc.returncode == 7, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("uid=0(root) gid=0(root)")
    assert lines[1].split() == ["0", str(box.ids.start), "65536"]
    assert lines[2] == "exec-box"
    assert int(lines[3]) > 1          # in the container's pid namespace, not its pid 1
    st = os.stat(box.path("upper", "by-exec"))
    assert st.st_uid == box.ids.start


def test_rootfs_behind_an_unsearchable_directory_fails_clearly(boxes):
    box = boxes.make("true", userns=True)
    os.chmod(boxes.tmp, 0o700)
    try:
        with pytest.raises(StartError) as info:
            boxes.start(box)
    finally:
        os.chmod(boxes.tmp, 0o755)
        boxes.teardown(box)
    message = str(info.value)
    assert f"{boxes.tmp} is not searchable by other users" in message, message
    assert "\n" not in message


def test_bad_mappings_fail_before_anything_runs(boxes):
    box = boxes.make("true", userns=True, uid_mappings=())
    try:
        with pytest.raises(StartError, match="linux.uidMappings: required with a user"):
            boxes.start(box)
        assert not boxes.cgroups.exists(box.cgroup)
    finally:
        boxes.teardown(box)


def _tree(top: str) -> dict[str, tuple[int, int, int, bytes]]:
    """path -> (uid, gid, mode, content or link target) of everything under `top`."""
    found = {}
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                data = os.readlink(path).encode()
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    data = f.read()
            else:
                data = b""
            found[os.path.relpath(path, top)] = (st.st_uid, st.st_gid, st.st_mode, data)
    return found


def test_image_files_are_roots_through_idmapped_layers(boxes, run):
    # The overlay stacks idmapped mounts of the layers: host uid 0 on disk is
    # the container's root, so root may modify image files (copy-up) and
    # make files in the image's directories.
    layers_before = [_tree(layer) for layer in boxes.lower]
    box = run("set -e; ls -ln /bin/busybox | awk '{print $3, $4}'; "
              "ls -lnd /etc | awk '{print $3, $4}'; "
              "echo 'added:x:1234:1234::/:/bin/sh' >> /etc/passwd; "
              "touch /bin/newfile; echo more >> /bin/newfile; "
              "chown 1000:1000 /etc/group; echo done; sleep 30", userns=True)
    lines = _wait_lines(box, 3)
    assert lines == ["0 0", "0 0", "done"], box.output()
    start = box.ids.start
    # The layers as the overlay sees them: idmapped mounts under the bundle,
    # one per layer (numbers, not digests), showing host root's files as start.
    lower = box.path("lower")
    layers = [line.split() for line in procfs.mounts_mentioning(lower)
              if line.split()[4].startswith(lower + "/")]
    assert [f[4] for f in layers] == [os.path.join(lower, str(n))
                                      for n in range(len(boxes.lower))]
    assert all("idmapped" in f[5].split(",") for f in layers), layers
    # The overlay stacks them, not the image store's own directories.
    (overlay,) = [line for line in procfs.mounts_mentioning(box.path("rootfs"))
                  if line.split()[4] == box.path("rootfs")]
    assert f"{lower}/0" in overlay and boxes.lower[0] not in overlay, overlay
    assert os.stat(os.path.join(lower, "0", "bin", "busybox")).st_uid == start
    # What root changed landed in the upper dir as the container's host ids ...
    upper = box.path("upper")
    st = os.stat(os.path.join(upper, "etc", "passwd"))
    assert (st.st_uid, st.st_gid) == (start, start)
    with open(os.path.join(upper, "etc", "passwd")) as f:
        assert f.read().endswith("added:x:1234:1234::/:/bin/sh\n")
    st = os.stat(os.path.join(upper, "bin", "newfile"))
    assert (st.st_uid, st.st_gid) == (start, start)
    st = os.stat(os.path.join(upper, "etc", "group"))
    assert (st.st_uid, st.st_gid) == (start + 1000, start + 1000)
    # ... and the layers on disk are as they were: owners, modes, contents.
    assert [_tree(layer) for layer in boxes.lower] == layers_before
    assert os.stat(os.path.join(boxes.lower[-1], "bin", "busybox")).st_uid == 0
    # /tmp is still everyone's.
    assert stat.S_IMODE(os.stat(box.path("rootfs", "tmp")).st_mode) == 0o1777


def test_containers_without_a_user_namespace_get_no_idmapped_layers(run):
    box = run("echo x >> /etc/passwd; ls -ln /bin/busybox | awk '{print $3}'")
    assert box.wait_exit()["exit_code"] == 0, box.output()
    assert box.stdout() == "0\n"
    assert not os.path.exists(box.path("lower"))
    assert procfs.mounts_mentioning(box.path("lower")) == []
    assert os.stat(box.path("upper", "etc", "passwd")).st_uid == 0


# -- the agent's own path: ContainerManager.create, start, teardown, adoption ---------------


@pytest.fixture
def managers(boxes: Boxes) -> Iterator:
    """managers() -> a ContainerManager on one state dir (a second one: the agent restarted)."""
    state = os.path.join(boxes.tmp, f"state-{secrets.token_hex(3)}")

    def make() -> ContainerManager:
        # Ranges of their own, beyond those of `boxes`' pool.
        ids = IdRanges(os.path.join(state, "userns"), base=TEST_ID_BASE + (256 << 16))
        return ContainerManager(state, "knode", boxes.images, boxes.cgroups, boxes.runtime,
                                cgroup_parent=boxes.prefix, id_ranges=ids)

    made: list[ContainerManager] = []

    def new() -> ContainerManager:
        made.append(make())
        return made[-1]

    yield new
    for manager in made:
        for container in manager.snapshot():
            manager.stop(container, 0)
            manager.teardown(container)


def _replica(script: str, userns: bool = True) -> types_pb2.Replica:
    name = f"k{secrets.token_hex(4)}"
    return types_pb2.Replica(
        metadata=types_pb2.ObjectMeta(name=name, namespace="ktest", uid=name),
        spec=types_pb2.WorkloadSpec(
            image="busybox", command=["sh", "-c", script],
            resources=types_pb2.Resources(memory_bytes=64 << 20, pids=64),
            security_context=types_pb2.SecurityContext(user_namespace=userns)))


def _wait_file(path: str) -> str:
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                text = f.read()
            if text.endswith("end\n"):
                return text
        time.sleep(0.02)
    raise AssertionError(f"{path} not written in 10s")


def _nothing_left(bundle: str) -> None:
    assert procfs.mounts_mentioning(bundle) == []
    assert not os.path.exists(bundle)


def test_agent_containers_get_idmapped_layers_and_leave_nothing(managers):
    manager = managers()
    container = manager.create(_replica(
        "ls -ln /bin/busybox | awk '{print $3}' > /result; "
        "echo x >> /etc/passwd && echo write=ok >> /result; echo end >> /result; sleep 30"))
    bundle = container.bundle
    start = manager.id_ranges.held()[container.id].start
    assert overlay.mounts_under(os.path.join(bundle, "lower"))     # idmapped layers
    # Seen from the host through the overlay, the image's files are the container's root's.
    assert os.stat(os.path.join(bundle, "rootfs", "bin", "busybox")).st_uid == start
    manager.start(container)
    assert _wait_file(os.path.join(bundle, "upper", "result")) == "0\nwrite=ok\nend\n"
    assert os.stat(os.path.join(bundle, "upper", "etc", "passwd")).st_uid == start
    manager.stop(container, 0)
    manager.teardown(container)
    _nothing_left(bundle)
    assert manager.id_ranges.held() == {}


def test_adopted_containers_unmount_their_idmapped_layers(managers):
    first = managers()
    container = first.create(_replica("sleep 30"))
    first.start(container)
    # The agent restarts: a new manager adopts the bundle, mounts and all.
    second = managers()
    (adopted,) = second.adopt_all()
    assert adopted.id == container.id and adopted.running()
    first.containers.clear()
    second.stop(adopted, 0)
    second.teardown(adopted)
    _nothing_left(container.bundle)


def test_a_failed_create_leaves_no_idmapped_layers(managers, monkeypatch):
    manager = managers()

    def fail(sys_: object, lower: list[str], *args: object, **kwargs: object) -> None:
        assert lower and all(overlay.mounts_under(layer) == [layer] for layer in lower)
        raise OSError(5, "overlay refused (test)")

    # After the layers are idmapped, before the overlay is up.
    monkeypatch.setattr(overlay, "mount_overlay", fail)
    replica = _replica("true")
    with pytest.raises(ContainerError, match="overlay refused"):
        manager.create(replica)
    _nothing_left(os.path.join(manager.root, containers.container_id("ktest",
                                                                     replica.metadata.name)))
    assert manager.id_ranges.held() == {}


def test_the_cost_of_idmapped_layers_is_small(managers):
    import time

    manager = managers()
    times = {}
    for userns_ in (False, True):
        samples = []
        for _ in range(5):
            t0 = time.perf_counter()
            container = manager.create(_replica("true", userns=userns_))
            samples.append(time.perf_counter() - t0)
            manager.teardown(container)
        times[userns_] = sorted(samples)[len(samples) // 2]
    # One helper process and a few syscalls per create: milliseconds, not more.
    assert times[True] - times[False] < 0.05, times


@pytest.mark.parametrize("name", ["runc", "crun", "mctl-runtime"])
def test_the_same_bundle_under_each_oci_runtime(boxes, name):
    # config.json's user namespace is runc's format: runc and crun realize it
    # too, and mctl-runtime through the same code as the native runtime.
    try:
        runtime = make_runtime(name, os.path.join(boxes.tmp, f"oci-{name}"))
    except RuntimeNotFound as e:
        pytest.skip(str(e))
    box = boxes.make("id -u; cat /proc/self/uid_map; echo x > /made", userns=True)
    try:
        result = runtime.start(box.id, box.bundle)
        box.monitor_pid, box.init_pid = result.monitor_pid, result.init_pid
        assert box.wait_exit()["exit_code"] == 0, box.output()
        lines = box.lines()
        assert lines[0] == "0"
        assert lines[1].split() == ["0", str(box.ids.start), "65536"]
        assert os.stat(box.path("upper", "made")).st_uid == box.ids.start
    finally:
        runtime.delete(box.id, box.bundle, box.cgroup)
        runtime.close()
        boxes.teardown(box)


def _wait_lines(box: Box, count: int) -> list[str]:
    """The first `count` stdout lines, once the container has written them."""
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = box.lines()
        if len(lines) >= count:
            return lines
        time.sleep(0.02)
    raise AssertionError(f"{box.id} wrote {box.lines()} in 10s, wanted {count} lines")

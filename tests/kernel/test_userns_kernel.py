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
from boxes import Box, Boxes, status_field

from mctl.agent.runtime import capabilities, oci, userns
from mctl.agent.runtime.external import make_runtime
from mctl.agent.runtime.native import StartError
from mctl.agent.runtime.ociclient import RuntimeNotFound
from mctl.common import netns

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
    # ... with one, root is no one to the host's files and devices: the
    # image's files (the host root's) show as the overflow id 65534.
    assert mapped.stdout().splitlines()[1:] == [
        "mknod=denied", "write=denied", "chown=denied", "65534"]
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


def test_image_directories_stay_the_host_roots(run):
    # What the upper dir's owner does not cover: the image's own directories
    # belong to the host's root, so mapped root writes only where anyone may.
    box = run("touch /etc/new 2>&1; touch /tmp/new && echo tmp=ok", userns=True)
    box.wait_exit()
    out = box.output().splitlines()
    assert "Permission denied" in out[0], out
    assert stat.S_IMODE(os.stat(box.path("rootfs", "tmp")).st_mode) == 0o1777
    assert out[1] == "tmp=ok"


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
        runtime.remove(box.id, box.bundle, box.cgroup)
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

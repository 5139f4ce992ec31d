"""exec into a container with a user namespace: user first, as runc, and a host netns before it.

Needs root and user namespaces. Bundles come from boxes.Boxes (the agent's
layout, idmapped layers, a range of host ids per container); the runtimes
are test_oci_runtimes_kernel's. Under mctl-runtime, runc and crun an exec'd
process is in the init's user namespace (root inside, the container's
mapping) and its other namespaces. With a network namespace of the host's
joined by path, which only the host's root may enter, mctl-runtime joins it
before the user namespace; crun 1.8.1 manages too, runc 1.1.5 cannot even
create such a container (mounting /sys for a netns its user namespace does
not own: EPERM), so it is left out there.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from boxes import Box, Boxes
from test_oci_runtimes_kernel import RUNTIMES, WAIT, Runtime

from mctl.agent.runtime import userns
from mctl.agent.runtime.oci import client as ociclient
from mctl.common import netns

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces, mounts, cgroups"),
]

SCRIPT = ("id -u; cat /proc/self/uid_map; "
          "for n in user mnt pid net ipc uts; do readlink /proc/self/ns/$n; done")


@pytest.fixture(scope="module")
def boxes() -> Iterator[Boxes]:
    reason = userns.unavailable()
    if reason:
        pytest.skip(reason)
    b = Boxes("execuserns")
    try:
        yield b
    finally:
        ociclient.remove_empty_cgroups(b.prefix)
        assert b.close() == {}


def _runtime(boxes: Boxes, name: str) -> Runtime:
    try:
        binary = ociclient.resolve(name)
    except ociclient.RuntimeNotFound as e:
        pytest.skip(str(e))
    return Runtime(name, binary, os.path.join(boxes.tmp, "roots", name))


NAMESPACES = ("user", "mnt", "pid", "net", "ipc", "uts")


def _exec_sees(rt: Runtime, boxes: Boxes, box: Box) -> tuple[list[str], list[str]]:
    """What the exec'd SCRIPT printed, and the init's namespaces as the host sees them."""
    out = os.path.join(boxes.tmp, f"{box.id}.out")
    rt("run", "--detach", "--bundle", box.bundle, box.id, out=out)
    try:
        init = rt.state(box.id)["pid"]
        lines = rt("exec", box.id, "sh", "-c", SCRIPT, timeout=WAIT * 3).stdout.splitlines()
        return lines, [os.readlink(f"/proc/{init}/ns/{n}") for n in NAMESPACES]
    finally:
        rt("delete", "--force", box.id, check=False)


@pytest.mark.parametrize("name", RUNTIMES)
def test_exec_is_root_of_the_containers_user_namespace(boxes, name):
    rt = _runtime(boxes, name)
    box = boxes.make("exec sleep 60", userns=True)
    try:
        lines, init_ns = _exec_sees(rt, boxes, box)
    finally:
        boxes.teardown(box)
    assert lines[0] == "0"
    assert lines[1].split() == ["0", str(box.ids.start), "65536"]
    assert lines[2:] == init_ns


@pytest.fixture
def host_netns() -> Iterator[str]:
    """A named network namespace owned by the host's user namespace, as the agent makes."""
    name = f"mctl-ktest-{secrets.token_hex(4)}"
    path = netns.create(name)
    yield path
    netns.remove(name)
    assert not netns.exists(name)


@pytest.mark.parametrize("name", ["mctl-runtime", "crun"])
def test_a_host_owned_network_namespace_is_joined_before_the_user_namespace(boxes, host_netns,
                                                                            name):
    rt = _runtime(boxes, name)
    box = boxes.make("exec sleep 60", userns=True, namespace_paths={"network": host_netns})
    try:
        lines, init_ns = _exec_sees(rt, boxes, box)
    finally:
        boxes.teardown(box)
    assert lines[0] == "0"
    assert lines[2:] == init_ns
    assert init_ns[0] != os.readlink("/proc/self/ns/user")
    assert init_ns[3] == f"net:[{os.stat(host_netns).st_ino}]"

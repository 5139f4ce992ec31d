"""Image GC on a real cluster: the agent's --image-gc-high/low remove an unused image.

A one-node local cluster whose agent's marks are set below what its disk
already uses (`cluster up --image-gc-high 1 --image-gc-low 1`), so every GC
pass (each 30 s, agent/images/gc.py) removes whatever image no replica of
the node wants: the image a running replica uses stays, one pulled ahead
and used by nothing goes, and the node's events say what went. The
registry is tests/registry.py's, on the cluster's host bridge address.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_registry import BUSYBOX, Setup, serve  # the same images and helpers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from registry import tools_missing  # noqa: E402

pytestmark = pytest.mark.skipif(
    tools_missing() or not BUSYBOX,
    reason="needs skopeo, docker-registry, apache2-utils and busybox-static")

GC_PERIOD_S = 30


@pytest.fixture(scope="module")
def setup(cluster_factory, tmp_path_factory) -> Iterator[Setup]:
    yield from serve(cluster_factory, tmp_path_factory.mktemp("registry-gc-e2e"), 1,
                     "--image-gc-high", "1", "--image-gc-low", "1")


def test_gc_removes_the_unused_image_keeps_the_used_one_and_says_so(setup: Setup):
    cluster = setup.cluster
    setup.push("used", "team/app:used")
    setup.push("unused", "team/app:unused")
    used = f"{setup.registry.address}/team/app:used"
    unused = f"{setup.registry.address}/team/app:unused"
    setup.apply("keep", used)
    setup.running("keep", 1)
    out = cluster.mctl("image", "pull", unused).stdout
    assert f"pulled {unused}" in out, out

    def collected() -> bool:
        return unused not in cluster.mctl("image", "ls").stdout
    cluster.wait_for("the unused image collected", collected, timeout=GC_PERIOD_S * 2 + 15)
    listed = cluster.mctl("image", "ls").stdout
    assert used in listed and "busybox" in listed
    # Still running, on the image GC kept.
    setup.running("keep", 1)
    assert set(setup.versions("keep").values()) == {"version=used"}

    def event() -> str | None:
        text = cluster.mctl("describe", "node", "node1").stdout
        return text if f"removed unused image {unused}" in text else None
    described = cluster.wait_for("the node's ImageGarbageCollected event", event, timeout=30)
    assert "ImageGarbageCollected" in str(described)
    assert f"removed unused image {used}" not in str(described)
    events = cluster.mctl("events").stdout
    assert "ImageGarbageCollected" in events and unused in events
    setup.delete("keep")

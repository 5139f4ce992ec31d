"""The image-locality scorer (scheduler/imagescore.py) and how far it may move placement."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from mctl.agent.images.store import Image, ImageStore
from mctl.scheduler import imagescore
from mctl.scheduler.model import NodeView, Resources
from mctl.scheduler.placement import (
    MAX_SCORE,
    SPREAD_WEIGHT,
    NodeState,
    PlacementRequest,
    active_scorers,
    node_score,
    place_batch,
    place_one,
)

MI = 1024**2
BIG = Resources(4000, 4096 * MI, 1000)
DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


def node(name: str, images: frozenset[str] = frozenset(), capacity: Resources = BIG) -> NodeState:
    return NodeState(NodeView(name, capacity, {}, True, False, images=images))


def request(digest: str = DIGEST, spread: bool = True, workload: str = "default/web",
            cpu: int = 100) -> PlacementRequest:
    return PlacementRequest(workload, Resources(cpu, 64 * MI, 10), {}, (), spread,
                            image_digest=digest)


def test_the_scorer_is_bounded_and_a_set_lookup():
    assert imagescore.HELD_SCORE == MAX_SCORE
    assert imagescore.score_image_locality(node("a", frozenset({DIGEST})), request()) == MAX_SCORE
    assert imagescore.score_image_locality(node("a", frozenset({OTHER})), request()) == 0.0
    # Weighted below one step of spreading (100 -> 50 replicas' worth).
    assert imagescore.WEIGHT * MAX_SCORE < SPREAD_WEIGHT * (MAX_SCORE - MAX_SCORE / 2)


def test_only_a_pinned_request_uses_it():
    assert imagescore.score_image_locality not in [s for s, _ in active_scorers(request(""))]
    assert imagescore.score_image_locality in [s for s, _ in active_scorers(request())]
    for images in (frozenset(), frozenset({DIGEST})):
        assert 0.0 <= node_score(node("a", images), request()) <= MAX_SCORE


def test_digest_of_prefers_the_pin_then_the_images_own():
    assert imagescore.digest_of("r.io/app:1", DIGEST) == DIGEST
    assert imagescore.digest_of(f"r.io/app@{OTHER}", "") == OTHER
    assert imagescore.digest_of("r.io/app:1", "") == ""


@pytest.mark.parametrize("seed", range(10))
def test_a_new_workload_goes_where_its_image_is(seed):
    nodes = [node("n1"), node("n2", frozenset({DIGEST})), node("n3", frozenset({OTHER}))]
    assert place_one(request(), nodes, seed).node == "n2"
    # Without a digest the tie is the seed's, as before.
    chosen = {place_one(request(""), nodes, s).node for s in range(30)}
    assert len(chosen) > 1


@pytest.mark.parametrize("seed", range(10))
def test_spreading_still_wins_over_the_image(seed):
    holder = node("n1", frozenset({DIGEST}))
    holder.add("default/web", Resources(100, 64 * MI, 10))
    nodes = [holder, node("n2"), node("n3")]
    assert place_one(request(), nodes, seed).node in ("n2", "n3")
    # A workload that does not spread stays where its image is.
    assert place_one(request(spread=False), nodes, seed).node == "n1"


def test_a_scale_up_without_spread_fills_the_holder_while_it_has_room():
    small = Resources(1000, 1024 * MI, 100)
    nodes = [node("n1", frozenset({DIGEST}), small), node("n2", capacity=small)]
    reqs = [(f"r{i}", request(spread=False, cpu=100)) for i in range(12)]
    placed = place_batch(reqs, nodes, seed=3)
    on = [placed[f"r{i}"].node for i in range(12)]
    # The holder takes replicas while it has room (10 of 100 millicores
    # fill its 1000), never past its capacity; the rest go to the other node.
    assert on == ["n1"] * 10 + ["n2"] * 2


def test_the_image_yields_to_a_much_emptier_node():
    # The holder is 90% used; the other node is empty: least-allocated's
    # difference (more than 75 points) outweighs the image.
    holder = node("n1", frozenset({DIGEST}), Resources(1000, 1024 * MI, 100))
    holder.add("default/other", Resources(900, 900 * MI, 1))
    assert place_one(request(spread=False), [holder, node("n2")], seed=1).node == "n2"


def test_node_images_are_bounded_checked_and_forgotten():
    images = imagescore.NodeImages()
    many = [f"sha256:{i:064x}" for i in range(imagescore.MAX_NODE_IMAGES + 50)]
    images.set("n1", many + ["sha256:short", "../etc", ""])
    assert len(images.get("n1")) == imagescore.MAX_NODE_IMAGES
    assert "sha256:short" not in images.get("n1")
    images.set("n2", [DIGEST])
    images.retain(["n2"])
    assert images.get("n1") == frozenset() and images.get("n2") == {DIGEST}
    images.set("n2", [])
    assert images.get("n2") == frozenset()


def test_reportable_keeps_pinned_digests_in_order_once():
    names = [f"r.io/a:1@{DIGEST}", "busybox:latest", f"r.io/b@{DIGEST}", f"r.io/c:2@{OTHER}"]
    assert imagescore.reportable(names) == [DIGEST, OTHER]


def test_the_store_reports_the_most_recently_used_pinned_digests():
    root = tempfile.mkdtemp(prefix="mctl-test-store-")
    try:
        store = ImageStore(root)
        for i, name in enumerate([f"r.io/a:1@{DIGEST}", "app:1", f"r.io/b@{OTHER}"]):
            store.put(Image(name=name, layers=()))
            os.utime(store._record_path(name), (1000 + i, 1000 + i))
        assert store.pinned_digests(10) == sorted([DIGEST, OTHER])
        assert store.pinned_digests(1) == [OTHER]        # the most recent
        store.touch(f"r.io/a:1@{DIGEST}")
        assert store.pinned_digests(1) == [DIGEST]
    finally:
        shutil.rmtree(root)

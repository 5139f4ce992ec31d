"""Host id ranges for user namespaces: allocation, persistence, release."""

from __future__ import annotations

import os
import threading

import pytest

from mctl.agent.idranges import ID_LIMIT, IdRange, IdRangeError, IdRanges


def test_slots_are_consecutive_ranges_from_the_base(tmp_path):
    pool = IdRanges(str(tmp_path), base=100_000, size=65536)
    assert pool.allocate("a") == IdRange(100_000, 65536)
    assert pool.allocate("b") == IdRange(165_536, 65536)
    # The owner's range again, not a new one.
    assert pool.allocate("a") == IdRange(100_000, 65536)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "1"]
    assert (tmp_path / "1").read_text() == "b"


def test_the_lowest_free_slot_is_reused(tmp_path):
    pool = IdRanges(str(tmp_path))
    a, b, c = (pool.allocate(x) for x in "abc")
    assert pool.release("b") is True
    assert pool.release("b") is False
    assert pool.allocate("d") == b
    assert a.start < b.start < c.start


def test_a_restarted_agent_keeps_ranges_and_frees_the_unowned(tmp_path):
    first = IdRanges(str(tmp_path))
    ranges = {x: first.allocate(x) for x in "abc"}
    again = IdRanges(str(tmp_path))
    assert again.held() == ranges
    assert again.release_all_but({"a", "c"}) == ["b"]
    assert again.held() == {"a": ranges["a"], "c": ranges["c"]}
    assert again.allocate("c") == ranges["c"]
    assert again.allocate("new") == ranges["b"]


def test_never_gives_a_slot_held_on_disk_twice(tmp_path):
    pool = IdRanges(str(tmp_path))
    pool.held()                      # cache read while the directory is empty
    (tmp_path / "0").write_text("someone")
    assert pool.allocate("x").start == pool.base + pool.size


def test_full_pool_raises(tmp_path):
    pool = IdRanges(str(tmp_path), base=ID_LIMIT - 3 * 65536, size=65536)
    assert pool.count == 3
    for x in "abc":
        pool.allocate(x)
    with pytest.raises(IdRangeError, match="all 3 user namespace id ranges are in use"):
        pool.allocate("d")


@pytest.mark.parametrize(("base", "size", "problem"), [
    (0, 65536, "below 65536"),
    (1000, 65536, "below 65536"),
    (100_000, 1000, "images use ids up to 65534"),
    (ID_LIMIT, 65536, "no range of 65536 ids fits"),
])
def test_bad_pool_settings(tmp_path, base, size, problem):
    with pytest.raises(IdRangeError, match=problem):
        IdRanges(str(tmp_path), base=base, size=size)


def test_threads_never_share_a_range(tmp_path):
    pool = IdRanges(str(tmp_path))
    got: dict[str, IdRange] = {}

    def take(owner: str) -> None:
        got[owner] = pool.allocate(owner)

    threads = [threading.Thread(target=take, args=(f"c{i}",)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.start for r in got.values()}) == 20


def test_count_caps_the_window(tmp_path):
    pool = IdRanges(str(tmp_path), base=200_000, size=65536, count=2)
    assert [pool.allocate(c).start for c in ("a", "b")] == [200_000, 265_536]
    with pytest.raises(IdRangeError, match="all 2 user namespace id ranges are in use"):
        pool.allocate("c")
    with pytest.raises(IdRangeError, match="do not fit"):
        IdRanges(str(tmp_path / "x"), base=ID_LIMIT - 2 * 65536, size=65536, count=3)


def test_local_cluster_windows_are_disjoint_and_fit():
    from mctl.cli.cluster import USERNS_MAX_NODES, userns_flags

    windows = []
    for w in range(USERNS_MAX_NODES):
        flags = dict(zip(userns_flags(w)[::2], userns_flags(w)[1::2], strict=True))
        base, size, count = (int(flags[k]) for k in
                             ("--userns-base", "--userns-size", "--userns-count"))
        assert base >= 65536
        windows.append((base, base + size * count))
    assert windows[-1][1] <= ID_LIMIT
    assert all(a[1] <= b[0] for a, b in zip(windows, windows[1:], strict=False))


def test_local_clusters_on_one_host_claim_different_windows(tmp_path):
    from mctl.cli.cluster import (
        USERNS_MAX_NODES,
        ClusterError,
        claim_userns_window,
        release_userns_window,
    )

    claims = str(tmp_path / "windows")
    one, two = tmp_path / "cluster-one", tmp_path / "cluster-two"
    one.mkdir()
    two.mkdir()
    got = [claim_userns_window(f"{one} node1", claims), claim_userns_window(f"{one} node2", claims),
           claim_userns_window(f"{two} node1", claims)]
    assert got == [0, 1, 2]
    release_userns_window(1, f"{one} node2", claims)
    release_userns_window(0, f"{two} node1", claims)   # not its window: kept
    assert claim_userns_window(f"{two} node2", claims) == 1
    # A cluster directory removed without `cluster down`: its windows come back.
    two.rmdir()
    assert claim_userns_window(f"{one} node3", claims) == 1
    assert sorted(os.listdir(claims)) == ["0", "1"]
    for _ in range(USERNS_MAX_NODES - 2):
        claim_userns_window(f"{one} more", claims)
    with pytest.raises(ClusterError, match="windows of user-namespace host ids"):
        claim_userns_window(f"{one} last", claims)


def test_the_last_window_released_removes_the_directory(tmp_path):
    from mctl.cli.cluster import claim_userns_window, release_userns_window

    claims = tmp_path / "windows"
    window = claim_userns_window(f"{tmp_path} node1", str(claims))
    assert claims.is_dir()
    release_userns_window(window, f"{tmp_path} node1", str(claims))
    assert not claims.exists()
    assert claim_userns_window(f"{tmp_path} node1", str(claims)) == window  # made again


def test_a_negative_count_is_refused_as_such(tmp_path):
    with pytest.raises(IdRangeError, match="count -3 must not be negative"):
        IdRanges(str(tmp_path), count=-3)

"""Unit tests of placement: every filter, every scorer, the planner."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_budget import examples

from mctl.scheduler.model import (
    NodeView,
    Phase,
    ReplicaView,
    Resources,
    WorkloadView,
)
from mctl.scheduler.placement import (
    FILTERS,
    MAX_SCORE,
    REASON_CORDONED,
    REASON_CPU,
    REASON_HOST_PORT,
    REASON_MEMORY,
    REASON_NODE_SELECTOR,
    REASON_NOT_READY,
    REASON_PIDS,
    NodeState,
    PlacementRequest,
    PlacementResult,
    active_scorers,
    build_node_states,
    filter_cordoned,
    filter_cpu,
    filter_host_ports,
    filter_memory,
    filter_node_selector,
    filter_pids,
    filter_ready,
    filter_volume_node,
    first_rejection,
    node_score,
    place_batch,
    place_one,
    score_least_allocated,
    score_spread,
    unschedulable_message,
)

MI = 1024**2
BIG = Resources(4000, 4096 * MI, 1000)


def node(
    name: str = "n1",
    capacity: Resources = BIG,
    labels: dict[str, str] | None = None,
    ready: bool = True,
    cordoned: bool = False,
) -> NodeState:
    return NodeState(NodeView(name, capacity, labels or {}, ready, cordoned))


def request(
    cpu: int = 100,
    memory: int = 64 * MI,
    pids: int = 10,
    workload: str = "default/web",
    selector: dict[str, str] | None = None,
    ports: tuple[tuple[str, int], ...] = (),
    spread: bool = True,
) -> PlacementRequest:
    return PlacementRequest(workload, Resources(cpu, memory, pids), selector or {}, ports, spread)


# --- Resources ---------------------------------------------------------------


def test_resources_add_sub_and_fits_in():
    a = Resources(100, 200, 3)
    b = Resources(10, 20, 1)
    assert a + b == Resources(110, 220, 4)
    assert a - b == Resources(90, 180, 2)
    assert b.fits_in(a)
    assert a.fits_in(a)
    assert not a.fits_in(b)
    assert not Resources(0, 0, 4).fits_in(a)  # one component is enough to not fit


# --- Filters -----------------------------------------------------------------


def test_filter_ready():
    assert filter_ready(node(), request()) is None
    assert filter_ready(node(ready=False), request()) == REASON_NOT_READY


def test_filter_cordoned():
    assert filter_cordoned(node(), request()) is None
    assert filter_cordoned(node(cordoned=True), request()) == REASON_CORDONED


@pytest.mark.parametrize(
    ("labels", "selector", "fits"),
    [
        ({}, {}, True),
        ({"disk": "ssd", "zone": "a"}, {"disk": "ssd"}, True),
        ({"disk": "ssd", "zone": "a"}, {"disk": "ssd", "zone": "a"}, True),
        ({"disk": "hdd"}, {"disk": "ssd"}, False),
        ({"zone": "a"}, {"disk": "ssd"}, False),
        ({"disk": "ssd"}, {"disk": "ssd", "zone": "a"}, False),
        ({"disk": ""}, {"disk": ""}, True),
        ({}, {"disk": ""}, False),  # an empty value still needs the label
    ],
)
def test_filter_node_selector(labels, selector, fits):
    reason = filter_node_selector(node(labels=labels), request(selector=selector))
    assert reason == (None if fits else REASON_NODE_SELECTOR)


def loaded(capacity: Resources, allocated: Resources) -> NodeState:
    state = node(capacity=capacity)
    state.add("default/other", allocated)
    return state


@pytest.mark.parametrize(
    ("check", "reason", "field_index"),
    [(filter_cpu, REASON_CPU, 0), (filter_memory, REASON_MEMORY, 1), (filter_pids, REASON_PIDS, 2)],
)
def test_resource_filters_accept_an_exact_fit_and_reject_one_unit_more(check, reason, field_index):
    capacity = Resources(1000, 1000, 1000)
    allocated = Resources(600, 600, 600)
    exact = [100, 100, 100]
    exact[field_index] = 400
    over = list(exact)
    over[field_index] = 401
    state = loaded(capacity, allocated)
    assert check(state, PlacementRequest("default/web", Resources(*exact))) is None
    assert check(state, PlacementRequest("default/web", Resources(*over))) == reason


def test_resource_filters_look_only_at_their_resource():
    state = loaded(Resources(1000, 1000, 1000), Resources(1000, 0, 0))
    req = PlacementRequest("default/web", Resources(1, 1, 1))
    assert filter_cpu(state, req) == REASON_CPU
    assert filter_memory(state, req) is None
    assert filter_pids(state, req) is None


def test_zero_request_fits_a_full_node_but_not_an_overcommitted_one():
    zero = PlacementRequest("default/web", Resources())
    assert first_rejection(loaded(Resources(10, 10, 10), Resources(10, 10, 10)), zero) is None
    assert first_rejection(loaded(Resources(10, 10, 10), Resources(11, 0, 0)), zero) == REASON_CPU


def test_filter_host_ports():
    state = node()
    state.add("default/other", Resources(), [("TCP", 80)])
    assert filter_host_ports(state, request(ports=(("TCP", 80),))) == REASON_HOST_PORT
    assert filter_host_ports(state, request(ports=(("TCP", 81), ("TCP", 80)))) == REASON_HOST_PORT
    assert filter_host_ports(state, request(ports=(("UDP", 80),))) is None
    assert filter_host_ports(state, request(ports=(("TCP", 8080),))) is None
    assert filter_host_ports(state, request()) is None


def test_filter_chain_order():
    assert FILTERS == (
        filter_volume_node,
        filter_ready,
        filter_cordoned,
        filter_node_selector,
        filter_cpu,
        filter_memory,
        filter_pids,
        filter_host_ports,
    )


def test_only_the_first_rejecting_filter_counts():
    # Rejected by every filter: only "not ready" may be counted.
    state = node(capacity=Resources(0, 0, 0), labels={"disk": "hdd"}, ready=False, cordoned=True)
    state.add("default/other", Resources(), [("TCP", 80)])
    req = request(selector={"disk": "ssd"}, ports=(("TCP", 80),))
    assert first_rejection(state, req) == REASON_NOT_READY
    result = place_one(req, [state], seed=0)
    assert result.rejections == Counter({REASON_NOT_READY: 1})

    cordoned_and_full = node(capacity=Resources(0, 0, 0), cordoned=True)
    assert first_rejection(cordoned_and_full, request()) == REASON_CORDONED

    wrong_labels_and_full = node(capacity=Resources(0, 0, 0), labels={"disk": "hdd"})
    assert first_rejection(wrong_labels_and_full, request(selector={"disk": "ssd"})) == (
        REASON_NODE_SELECTOR
    )


# --- Scorers -----------------------------------------------------------------


def test_score_spread_prefers_fewer_replicas_of_the_same_workload():
    req = request(workload="default/web")
    state = node()
    scores = []
    for _ in range(4):
        scores.append(score_spread(state, req))
        state.add("default/web", Resources())
    assert scores[0] == MAX_SCORE
    assert scores[1] == MAX_SCORE / 2
    assert scores == sorted(scores, reverse=True)
    assert len(set(scores)) == 4
    # Other workloads' replicas do not count.
    other = node()
    for _ in range(5):
        other.add("default/db", Resources())
    assert score_spread(other, req) == MAX_SCORE


def test_score_least_allocated():
    capacity = Resources(1000, 1000, 100)
    empty = node(capacity=capacity)
    # After placing: cpu 50% free, memory 100% free -> mean 75%.
    assert score_least_allocated(empty, request(cpu=500, memory=0)) == pytest.approx(75.0)
    assert score_least_allocated(empty, request(cpu=0, memory=0)) == pytest.approx(MAX_SCORE)
    assert score_least_allocated(empty, request(cpu=1000, memory=1000)) == pytest.approx(0.0)
    half = loaded(capacity, Resources(500, 250, 0))
    # cpu (1000-500-250)/1000 = 0.25, memory (1000-250-250)/1000 = 0.5.
    assert score_least_allocated(half, request(cpu=250, memory=250)) == pytest.approx(37.5)
    # Pids do not count.
    assert score_least_allocated(empty, request(cpu=0, memory=0, pids=100)) == MAX_SCORE


def test_score_least_allocated_stays_in_bounds():
    assert score_least_allocated(node(capacity=Resources(0, 0, 0)), request()) == 0.0
    over = loaded(Resources(100, 100, 100), Resources(200, 200, 0))
    assert score_least_allocated(over, request()) == 0.0


def test_active_scorers_and_normalized_score():
    assert [s for s, _ in active_scorers(request(spread=True))] == [
        score_spread,
        score_least_allocated,
    ]
    assert [s for s, _ in active_scorers(request(spread=False))] == [score_least_allocated]
    empty = node(capacity=Resources(1000, 1000, 10))
    # Spread off: the score is least-allocated alone, not diluted.
    assert node_score(empty, request(cpu=500, memory=0, spread=False)) == pytest.approx(75.0)
    for spread in (True, False):
        for allocated in (Resources(), Resources(900, 900, 0)):
            state = loaded(Resources(1000, 1000, 10), allocated)
            state.add("default/web", Resources())
            assert 0.0 <= node_score(state, request(cpu=50, memory=50, spread=spread)) <= MAX_SCORE


def test_spread_outweighs_least_allocated_only_when_asked():
    # "big" is emptier after placing but already has a replica of the workload.
    big = node("big", capacity=Resources(10000, 10000 * MI, 1000))
    big.add("default/web", Resources(100, 64 * MI, 1))
    small = node("small", capacity=Resources(1000, 1000 * MI, 1000))
    assert place_one(request(spread=True), [big, small], seed=1).node == "small"
    assert place_one(request(spread=False), [big, small], seed=1).node == "big"


# --- The planner -------------------------------------------------------------


def identical_nodes(count: int) -> list[NodeState]:
    return [node(f"n{i}") for i in range(count)]


def test_place_one_is_deterministic_for_a_seed_and_ignores_input_order():
    nodes = identical_nodes(8)
    req = request()
    first = place_one(req, nodes, seed=42)
    assert place_one(req, nodes, seed=42) == first
    assert place_one(req, list(reversed(nodes)), seed=42) == first
    assert place_one(req, random.Random(3).sample(nodes, len(nodes)), seed=42) == first


def test_seed_breaks_ties_between_equal_nodes():
    nodes = identical_nodes(8)
    chosen = {place_one(request(), nodes, seed=seed).node for seed in range(40)}
    assert len(chosen) > 1


def test_best_score_wins_over_tie_break():
    nodes = identical_nodes(5)
    nodes[3].add("default/other", Resources(1000, 1024 * MI, 0))
    emptiest = node("n9", capacity=Resources(8000, 8192 * MI, 1000))
    for seed in range(20):
        assert place_one(request(), [*nodes, emptiest], seed=seed).node == "n9"


def test_place_one_does_not_change_the_nodes():
    nodes = identical_nodes(3)
    result = place_one(request(ports=(("TCP", 80),)), nodes, seed=0)
    assert result.placed
    for state in nodes:
        assert state.allocated == Resources()
        assert state.host_ports == set()
        assert state.per_workload == {}


def test_batch_spreads_30_replicas_evenly_over_3_nodes():
    nodes = identical_nodes(3)
    req = request(cpu=100, memory=64 * MI, pids=10)
    results = place_batch([(f"web-{i}", req) for i in range(30)], nodes, seed=7)
    assert all(r.placed for r in results.values())
    assert Counter(r.node for r in results.values()) == {"n0": 10, "n1": 10, "n2": 10}
    for state in nodes:
        assert state.per_workload == {"default/web": 10}
        assert state.allocated == Resources(1000, 640 * MI, 100)


def test_batch_spreads_each_workload_separately():
    nodes = identical_nodes(3)
    web = request(workload="default/web")
    db = request(workload="default/db")
    reqs = [(f"web-{i}", web) for i in range(3)] + [(f"db-{i}", db) for i in range(3)]
    results = place_batch(reqs, nodes, seed=1)
    assert {results[f"web-{i}"].node for i in range(3)} == {"n0", "n1", "n2"}
    assert {results[f"db-{i}"].node for i in range(3)} == {"n0", "n1", "n2"}


def test_batch_sees_earlier_host_ports():
    nodes = identical_nodes(2)
    req = request(ports=(("TCP", 80),), spread=False)
    results = place_batch([("a", req), ("b", req), ("c", req)], nodes, seed=0)
    assert {results["a"].node, results["b"].node} == {"n0", "n1"}
    assert results["c"] == PlacementResult(None, Counter({REASON_HOST_PORT: 2}))


def test_batch_runs_out_of_memory_and_counts_why():
    nodes = [node("n0", capacity=Resources(10000, 256 * MI, 1000)), node("n1", cordoned=True)]
    req = request(cpu=10, memory=100 * MI)
    results = place_batch([(f"r{i}", req) for i in range(3)], nodes, seed=0)
    assert results["r0"].node == "n0"
    # Rejections cover every node, also for a replica that was placed.
    assert results["r0"].rejections == Counter({REASON_CORDONED: 1})
    assert results["r1"].node == "n0"
    assert results["r2"] == PlacementResult(None, Counter({REASON_MEMORY: 1, REASON_CORDONED: 1}))
    assert nodes[0].allocated == Resources(20, 200 * MI, 20)


def test_batch_with_no_nodes():
    results = place_batch([("r", request())], [], seed=0)
    assert results == {"r": PlacementResult(None, Counter())}
    assert unschedulable_message(results["r"].rejections, 0) == "0/0 nodes fit: no nodes registered"


def test_batch_is_deterministic():
    def run() -> dict[str, PlacementResult]:
        nodes = identical_nodes(10)
        reqs = [
            (f"r{i}", request(workload=f"default/w{i % 3}", spread=i % 2 == 0)) for i in range(40)
        ]
        return place_batch(reqs, nodes, seed=99)

    assert run() == run()


# --- A naive planner to check the fast one against -----------------------------


def reference_batch(
    reqs: list[tuple[str, PlacementRequest]], nodes: list[NodeState], seed: int
) -> dict[str, PlacementResult]:
    """Every filter and scorer on every node for every replica; the first best
    node in a seeded shuffle of the nodes sorted by name wins."""
    order = sorted(nodes, key=lambda n: n.name)
    random.Random(seed).shuffle(order)
    results = {}
    for replica_id, req in reqs:
        rejections: Counter[str] = Counter()
        best: NodeState | None = None
        best_score = -1.0
        for state in order:
            reason = first_rejection(state, req)
            if reason is not None:
                rejections[reason] += 1
                continue
            score = node_score(state, req)
            if score > best_score:
                best, best_score = state, score
        if best is not None:
            best.place(req)
        results[replica_id] = PlacementResult(best.name if best else None, rejections)
    return results


node_params = st.tuples(
    st.integers(0, 4000),  # cpu
    st.integers(0, 4000),  # memory
    st.integers(0, 40),  # pids
    st.dictionaries(st.sampled_from(["disk", "zone"]), st.sampled_from(["a", "b"]), max_size=2),
    st.booleans(),  # ready (mostly)
    st.booleans(),  # cordoned (rarely)
    st.lists(st.sampled_from([("TCP", 80), ("UDP", 53)]), max_size=1),
)
request_params = st.builds(
    PlacementRequest,
    workload_key=st.sampled_from(["default/web", "default/db", "other/web"]),
    request=st.builds(Resources, st.integers(0, 1500), st.integers(0, 1500), st.integers(0, 15)),
    node_selector=st.dictionaries(
        st.sampled_from(["disk", "zone"]), st.sampled_from(["a", "b"]), max_size=1
    ),
    host_ports=st.sampled_from([(), (("TCP", 80),), (("UDP", 53), ("TCP", 81))]),
    spread=st.booleans(),
)


def make_nodes(params: list) -> list[NodeState]:
    nodes = []
    for i, (cpu, memory, pids, labels, ready, cordoned, ports) in enumerate(params):
        state = node(f"n{i}", Resources(cpu, memory, pids), labels, ready or i % 3 != 0, cordoned)
        state.add("default/web" if i % 2 else "default/db", Resources(cpu // 4, 0, 0), ports)
        nodes.append(state)
    return nodes


@settings(max_examples=examples(300), deadline=None)
@given(
    params=st.lists(node_params, max_size=7),
    pool=st.lists(request_params, min_size=1, max_size=4),
    picks=st.lists(st.integers(0, 3), max_size=25),
    seed=st.integers(0, 2**32),
)
def test_batch_matches_the_naive_planner(params, pool, picks, seed):
    reqs = [(f"r{i}", pool[p % len(pool)]) for i, p in enumerate(picks)]
    fast_nodes, slow_nodes = make_nodes(params), make_nodes(params)
    results = place_batch(reqs, fast_nodes, seed)
    assert results == reference_batch(reqs, slow_nodes, seed)
    assert fast_nodes == slow_nodes
    # No reason is left behind with a count of 0 (Counter equality ignores them).
    assert all(count > 0 for r in results.values() for count in r.rejections.values())
    if reqs:
        assert (
            place_one(reqs[0][1], make_nodes(params), seed)
            == reference_batch(reqs[:1], make_nodes(params), seed)["r0"]
        )


# --- Node states and messages ------------------------------------------------


def replica(name: str, node_name: str, phase: Phase, **kw: object) -> ReplicaView:
    fields: dict = {"request": Resources(100, 10 * MI, 5), "host_ports": ()}
    fields.update(kw)
    return ReplicaView("default", name, "web", "h1", node_name, phase, 0, **fields)


def test_build_node_states_counts_replicas_that_still_hold_the_node():
    views = [NodeView("n1", BIG), NodeView("n2", BIG, {"disk": "ssd"})]
    replicas = [
        replica("a", "n1", Phase.RUNNING, host_ports=(("TCP", 80),)),
        replica("b", "n1", Phase.PENDING),  # bound, not started yet
        replica("c", "n1", Phase.TERMINATING),  # still holds its resources
        replica("d", "n1", Phase.RUNNING, deletion_requested=True),
        replica("e", "n1", Phase.SUCCEEDED, host_ports=(("TCP", 81),)),  # gone
        replica("f", "n1", Phase.FAILED),  # gone
        replica("g", "", Phase.PENDING),  # unplaced
        replica("h", "lost", Phase.RUNNING),  # on a node that is not registered
        replica("i", "n2", Phase.RUNNING),
    ]
    states = build_node_states(views, replicas)
    assert set(states) == {"n1", "n2"}
    n1 = states["n1"]
    assert n1.view == views[0]
    assert n1.allocated == Resources(400, 40 * MI, 20)
    assert n1.host_ports == {("TCP", 80)}
    assert n1.per_workload == {"default/web": 4}
    assert states["n2"].allocated == Resources(100, 10 * MI, 5)
    assert states["n2"].free == BIG - Resources(100, 10 * MI, 5)


def test_build_node_states_keys_workloads_by_namespace():
    replicas = [
        replica("a", "n1", Phase.RUNNING),
        ReplicaView("other", "a", "web", "h1", "n1", Phase.RUNNING),
    ]
    states = build_node_states([NodeView("n1", BIG)], replicas)
    assert states["n1"].per_workload == {"default/web": 1, "other/web": 1}


def test_unschedulable_message_from_the_spec():
    rejections = Counter({REASON_CORDONED: 1, REASON_MEMORY: 2})
    assert (
        unschedulable_message(rejections, 3) == "0/3 nodes fit: 2 insufficient memory, 1 cordoned"
    )


def test_unschedulable_message_orders_equal_counts_by_name_and_skips_zeros():
    rejections = Counter({REASON_PIDS: 1, REASON_CPU: 1, REASON_CORDONED: 0, REASON_NOT_READY: 3})
    assert (
        unschedulable_message(rejections, 5)
        == "0/5 nodes fit: 3 node not ready, 1 insufficient cpu, 1 insufficient pids"
    )
    assert unschedulable_message(Counter(), 0) == "0/0 nodes fit: no nodes registered"
    assert unschedulable_message(Counter({REASON_CPU: 1}), 3) == "2/3 nodes fit: 1 insufficient cpu"


def test_unschedulable_message_from_a_real_placement():
    nodes = [
        node("n1", capacity=Resources(4000, 32 * MI, 100)),
        node("n2", capacity=Resources(4000, 32 * MI, 100)),
        node("n3", cordoned=True),
    ]
    result = place_one(request(memory=64 * MI), nodes, seed=0)
    assert result.node is None
    assert unschedulable_message(result.rejections, len(nodes)) == (
        "0/3 nodes fit: 2 insufficient memory, 1 cordoned"
    )


def test_request_for_workload():
    workload = WorkloadView(
        "prod",
        "web",
        "h2",
        replicas=3,
        request=Resources(500, 64 * MI, 128),
        node_selector={"disk": "ssd"},
        host_ports=(("TCP", 18080),),
        spread=False,
    )
    assert PlacementRequest.for_workload(workload) == PlacementRequest(
        "prod/web", Resources(500, 64 * MI, 128), {"disk": "ssd"}, (("TCP", 18080),), False
    )

"""Virtual IP allocation (scheduler/vips.py): the plan of one pass, and its invariants.

The property test runs the plan the way the controller does, against a
model of etcd's compare-and-swap (a claim is created only if absent), with
applies, port changes, deletes, re-applies, passes cut short half-way and
restarts of the allocator (a new random offset; the allocator keeps nothing
else), and checks after every step that no two live workloads share an
address and that every address a status names is claimed by its workload.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mctl.scheduler import vips
from mctl.scheduler.vips import Holder, Need

CIDR = IPv4Network("10.96.0.0/16")


# -- the service CIDR ------------------------------------------------------------


def test_the_default_service_cidr_is_usable_with_the_default_cluster_cidr():
    net = vips.parse_service_cidr(vips.DEFAULT_SERVICE_CIDR, {"--cluster-cidr": "10.244.0.0/16"})
    assert net == CIDR


@pytest.mark.parametrize("text,others,message", [
    ("10.244.0.0/20", {"--cluster-cidr": "10.244.0.0/16"},
     "--service-cidr 10.244.0.0/20 overlaps --cluster-cidr 10.244.0.0/16"),
    ("10.0.0.0/12", {"--cluster-cidr": "10.0.0.0/8"},
     "--service-cidr 10.0.0.0/12 overlaps --cluster-cidr 10.0.0.0/8"),
    ("10.0.0.0/8", {}, "--service-cidr 10.0.0.0/8: the prefix must be between /12 and /30"),
    ("10.96.0.0/31", {}, "the prefix must be between /12 and /30"),
    ("10.96.0.1/16", {}, "has host bits set"),
    ("fd00::/112", {}, "only IPv4 is supported"),
    ("nonsense", {}, "--service-cidr 'nonsense'"),
])
def test_a_bad_service_cidr_is_one_line_naming_the_flags(text, others, message):
    with pytest.raises(vips.ServiceCIDRError) as e:
        vips.parse_service_cidr(text, others)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_an_unset_other_cidr_is_not_checked():
    assert vips.parse_service_cidr("10.96.0.0/16", {"--cluster-cidr": ""}) == CIDR


# -- picking ------------------------------------------------------------------------


def test_pick_scans_from_the_offset_and_wraps_skipping_network_and_broadcast():
    net = IPv4Network("10.96.0.0/29")            # usable: .1 to .6
    assert vips.pick(net, [], 0) == "10.96.0.1"
    assert vips.pick(net, [], 5) == "10.96.0.6"
    assert vips.pick(net, [], 6) == "10.96.0.1"    # wraps, never .7 (broadcast)
    assert vips.pick(net, ["10.96.0.6", "10.96.0.1"], 5) == "10.96.0.2"
    taken = [f"10.96.0.{i}" for i in range(1, 7)]
    assert vips.pick(net, taken, 3) is None
    # Addresses outside the CIDR (an old --service-cidr) do not fill it.
    assert vips.pick(net, ["10.1.0.1"] * 10 + taken[:5], 0) == "10.96.0.6"


def test_usable_addresses():
    net = IPv4Network("10.96.0.0/24")
    assert vips.usable("10.96.0.9", net)
    assert not vips.usable("10.96.0.0", net) and not vips.usable("10.96.0.255", net)
    assert not vips.usable("10.97.0.9", net) and not vips.usable("", net)
    assert not vips.usable("banana", net)


def test_owner_text_round_trips():
    assert vips.parse_owner(vips.owner_text(("shop", "api"))) == ("shop", "api")
    assert vips.parse_owner("no-slash") is None and vips.parse_owner("/x") is None


# -- one plan -------------------------------------------------------------------------


def test_a_workload_with_ports_gets_a_claim_then_its_status():
    plan = vips.plan(CIDR, {("d", "api"): Holder(Need.WANT)}, {}, start=41)
    assert plan.claims == {"10.96.0.42": ("d", "api")}
    assert plan.status == {("d", "api"): "10.96.0.42"}
    assert plan.releases == [] and plan.exhausted == []


def test_a_workload_holding_its_address_needs_nothing():
    plan = vips.plan(CIDR, {("d", "api"): Holder(Need.WANT, "10.96.3.4")},
                     {"10.96.3.4": "d/api"}, start=0)
    assert plan.empty


def test_a_claim_without_a_status_is_adopted():
    # A pass that committed its claim but not the status (cut short).
    plan = vips.plan(CIDR, {("d", "api"): Holder(Need.WANT)}, {"10.96.3.4": "d/api"})
    assert plan.claims == {} and plan.status == {("d", "api"): "10.96.3.4"}


def test_a_lost_claim_is_taken_back_when_the_address_is_free():
    plan = vips.plan(CIDR, {("d", "api"): Holder(Need.WANT, "10.96.3.4")}, {}, start=0)
    assert plan.claims == {"10.96.3.4": ("d", "api")} and plan.status == {}


def test_a_status_naming_another_workloads_address_gets_a_new_one():
    plan = vips.plan(CIDR, {("d", "api"): Holder(Need.WANT, "10.96.3.4"),
                            ("d", "web"): Holder(Need.WANT, "10.96.3.4")},
                     {"10.96.3.4": "d/web"}, start=0)
    assert plan.claims == {"10.96.0.1": ("d", "api")}
    assert plan.status == {("d", "api"): "10.96.0.1"}


def test_losing_its_ports_gives_the_address_back():
    plan = vips.plan(CIDR, {("d", "api"): Holder(Need.NONE, "10.96.3.4")},
                     {"10.96.3.4": "d/api"})
    assert plan.status == {("d", "api"): ""} and plan.releases == ["10.96.3.4"]
    assert plan.claims == {}


def test_a_workload_being_deleted_keeps_its_address_and_gets_none():
    plan = vips.plan(CIDR, {("d", "api"): Holder(Need.KEEP, "10.96.3.4"),
                            ("d", "new"): Holder(Need.KEEP)},
                     {"10.96.3.4": "d/api"})
    assert plan.empty


def test_claims_of_workloads_gone_or_outside_the_cidr_are_released():
    # api's record is gone; web's claim is in an old --service-cidr.
    plan = vips.plan(CIDR, {("d", "web"): Holder(Need.WANT, "10.100.0.5")},
                     {"10.96.3.4": "d/api", "10.100.0.5": "d/web", "10.96.0.9": "garbage"},
                     start=3 * 256 + 3)          # the offset of 10.96.3.4
    assert sorted(plan.releases) == ["10.100.0.5", "10.96.0.9", "10.96.3.4"]
    # A new address, never one released in the same pass.
    assert plan.claims == {"10.96.3.5": ("d", "web")}
    assert plan.status == {("d", "web"): "10.96.3.5"}


def test_extra_claims_of_one_owner_are_released_keeping_the_one_its_status_names():
    plan = vips.plan(CIDR, {("d", "api"): Holder(Need.WANT, "10.96.9.9")},
                     {"10.96.0.5": "d/api", "10.96.9.9": "d/api"})
    assert plan.releases == ["10.96.0.5"] and plan.status == {} and plan.claims == {}


def test_a_full_cidr_leaves_the_workload_without_and_says_so():
    net = IPv4Network("10.96.0.0/30")            # two usable addresses
    holders = {("d", n): Holder(Need.WANT) for n in ("a", "b", "c")}
    plan = vips.plan(net, holders, {}, start=0)
    assert plan.claims == {"10.96.0.1": ("d", "a"), "10.96.0.2": ("d", "b")}
    assert plan.exhausted == [("d", "c")]


# -- the property: never shared, kept, across restarts and cut-short passes ----------------


@dataclass
class Record:
    ports: bool
    deleting: bool = False
    vip: str = ""


@dataclass
class Etcd:
    """Records and claims, written as the controller writes them (in order, CAS on claims)."""

    records: dict[tuple[str, str], Record] = field(default_factory=dict)
    claims: dict[str, str] = field(default_factory=dict)

    def holders(self) -> dict[tuple[str, str], Holder]:
        return {key: Holder(Need.KEEP if r.deleting else Need.WANT if r.ports else Need.NONE,
                            r.vip) for key, r in self.records.items()}

    def run_pass(self, cidr: IPv4Network, start: int, cut: int | None = None) -> vips.VipPlan:
        """One pass, its writes applied in the controller's order, the first `cut` only."""
        plan = vips.plan(cidr, self.holders(), self.claims, start)
        writes: list[tuple[str, object, object]] = (
            [("claim", ip, owner) for ip, owner in plan.claims.items()]
            + [("status", key, ip) for key, ip in plan.status.items()]
            + [("release", ip, None) for ip in plan.releases])
        for kind, a, b in writes[:cut]:
            if kind == "claim":
                assert a not in self.claims, "a claim is created only if absent (CAS)"
                self.claims[a] = vips.owner_text(b)
            elif kind == "status":
                self.records[a].vip = b
            else:
                del self.claims[a]
        return plan

    def check(self, cidr: IPv4Network) -> None:
        live = {key: r for key, r in self.records.items() if not r.deleting}
        shown = [r.vip for r in live.values() if r.vip]
        assert len(shown) == len(set(shown)), f"two live workloads share a VIP: {live}"
        for key, r in self.records.items():
            if r.vip and not r.deleting:
                assert self.claims.get(r.vip) == vips.owner_text(key), \
                    f"{key} shows {r.vip} without holding it: {self.claims}"


NAMES = [("d", n) for n in ("api", "web", "db", "cache", "auth")] + [("x", "api")]
ops = st.one_of(
    st.tuples(st.just("apply"), st.sampled_from(NAMES), st.booleans()),
    st.tuples(st.just("delete"), st.sampled_from(NAMES), st.none()),
    # The controller removes the record of a deleted workload whose replicas are gone.
    st.tuples(st.just("finish"), st.sampled_from(NAMES), st.none()),
    st.tuples(st.just("pass"), st.integers(0, 1 << 20), st.none()),
    st.tuples(st.just("cut"), st.integers(0, 1 << 20), st.integers(0, 4)),
)


@settings(deadline=None)
@given(st.lists(ops, max_size=40), st.sampled_from(["10.96.0.0/29", "10.96.0.0/16"]))
def test_no_two_live_workloads_ever_share_an_address(steps, cidr_text):
    cidr = IPv4Network(cidr_text)
    etcd = Etcd()
    kept: dict[tuple[str, str], str] = {}   # the address each live workload was seen with
    for op, arg, extra in steps:
        if op == "apply":
            r = etcd.records.get(arg)
            if r is None:
                etcd.records[arg] = Record(ports=bool(extra))
            else:
                # Apply keeps the status (api.py), also of a record being deleted.
                r.ports, r.deleting = bool(extra), False
            if not extra:
                kept.pop(arg, None)
        elif op == "delete" and arg in etcd.records:
            etcd.records[arg].deleting = True
            kept.pop(arg, None)
        elif op == "finish" and arg in etcd.records and etcd.records[arg].deleting:
            del etcd.records[arg]
            etcd.run_pass(cidr, 0)     # the pass that removes a record releases its claim
        elif op == "pass":
            etcd.run_pass(cidr, arg)   # every pass is a restart: a new offset, no memory
        elif op == "cut":
            etcd.run_pass(cidr, arg, cut=extra)
        etcd.check(cidr)
        # Once a live workload with ports shows an address, it keeps it.
        for key, r in etcd.records.items():
            if r.vip and r.ports and not r.deleting:
                assert kept.setdefault(key, r.vip) == r.vip, f"{key} changed its VIP"
    # Two whole passes settle everything: the second has nothing to do.
    etcd.run_pass(cidr, 7)
    assert etcd.run_pass(cidr, 8).empty
    etcd.check(cidr)
    wanting = [k for k, r in etcd.records.items() if r.ports and not r.deleting]
    with_vip = [k for k in wanting if etcd.records[k].vip]
    assert len(with_vip) == min(len(wanting), cidr.num_addresses - 2 - sum(
        1 for k, r in etcd.records.items() if r.deleting and r.vip))
    owners = {vips.parse_owner(o) for o in etcd.claims.values()}
    assert owners <= set(etcd.records)
    assert all(etcd.records[o].ports or etcd.records[o].deleting for o in owners)

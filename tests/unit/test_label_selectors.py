"""Label selectors (common/selectors.py): kubectl's syntax, and the server filtering by them.

The parser is shared by the CLI and the scheduler; the scheduler filters
before paging, so a selected list comes in pages as full as the whole one.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from test_list_paging import Aborted, Context, Plane, all_pages, fill, replica

from mctl.common import selectors
from mctl.common.selectors import SelectorError, parse
from mctl.scheduler.store import Write
from mctl.v1 import control_pb2, types_pb2

WEB = {"app": "web", "tier": "front"}
DB = {"app": "db", "tier": "back", "x.io/canary": "yes"}
BARE: dict[str, str] = {}


@pytest.mark.parametrize(("text", "web", "db", "bare"), [
    ("", True, True, True),
    ("app=web", True, False, False),
    ("app==web", True, False, False),
    ("app!=web", False, True, True),             # kubectl: no label matches !=
    ("app", True, True, False),
    ("!app", False, False, True),
    ("x.io/canary", False, True, False),
    ("app=web,tier=front", True, False, False),
    ("app=web,tier=back", False, False, False),
    (" app = web , tier ", True, False, False),
    ("app in (web,db)", True, True, False),
    ("app in (web, cache),!x.io/canary", True, False, False),
    ("app notin (web)", False, True, True),
    ("tier=", False, False, False),             # an empty value is a value
])
def test_requirements_match_as_in_kubectl(text, web, db, bare):
    s = parse(text)
    assert (s.matches(WEB), s.matches(DB), s.matches(BARE)) == (web, db, bare)


@pytest.mark.parametrize(("text", "says"), [
    ("app=web,", "empty requirement"),
    (",app", "empty requirement"),
    ("app web", "is not a requirement"),
    ("app=we b", "label value"),
    ("-app=web", "label key"),
    ("a/b/c=d", "label key"),
    ("app in (web", 'without ")"'),
    ("app in ((web))", "nested"),
    ("app)", 'without "("'),
    ("app in (web,)", "empty value"),
    ("app=" + "x" * 64, "label value"),
    ("a" * 5000, "longer than"),
    (",".join(["a"] * 65), "more than 64 requirements"),
    ("app in (" + ",".join("v" for _ in range(65)) + ")", "more than 64 values"),
])
def test_what_is_no_selector_is_refused_with_the_reason(text, says):
    with pytest.raises(SelectorError, match=says.replace("(", r"\(").replace(")", r"\)")):
        parse(text)


def test_an_empty_selector_selects_everything():
    assert not parse("  ")
    assert parse("  ") == selectors.EVERYTHING


@pytest.fixture
def plane() -> Iterator[Plane]:
    p = Plane()
    yield p
    p.close()


def labelled(name: str, labels: dict[str, str]) -> types_pb2.Replica:
    r = replica("shop", name, 10)
    r.metadata.labels.update(labels)
    return r


def test_the_server_filters_before_paging(plane):
    fill(plane.store, [labelled(f"r{i:03d}", WEB if i % 3 else DB) for i in range(300)])
    pages = all_pages(plane.api.ListReplicas,
                      control_pb2.ListRequest(label_selector="app=db", page_size=40))
    # 100 of 300 match: pages of 40 are full, not 40 scanned with a third kept.
    assert [len(p.items) for p in pages] == [40, 40, 20]
    assert all(r.metadata.labels["app"] == "db" for p in pages for r in p.items)
    assert all(len(p.usage) == len(p.items) for p in pages)


def test_every_kind_is_filtered(plane):
    w = types_pb2.Workload()
    w.metadata.namespace, w.metadata.name = "shop", "web"
    w.metadata.labels.update(WEB)
    w.spec.replicas = 1
    node = types_pb2.Node(name="n1", labels={"zone": "a"})
    plane.store.commit([Write(plane.store.keys.workload("shop", "web"), w.SerializeToString(), 0),
                        Write(plane.store.keys.node("n1"), node.SerializeToString(), 0)])
    for fn, match, miss in [(plane.api.ListWorkloads, "app=web", "app=db"),
                            (plane.api.ListNodes, "zone in (a,b)", "zone!=a")]:
        assert len(fn(control_pb2.ListRequest(label_selector=match), Context()).items) == 1
        assert len(fn(control_pb2.ListRequest(label_selector=miss), Context()).items) == 0


def test_a_bad_selector_is_invalid_argument_naming_the_field(plane):
    for fn in (plane.api.ListReplicas, plane.api.ListWorkloads, plane.api.ListNodes,
               plane.api.ListConfigs, plane.api.ListSecrets, plane.api.ListVolumes):
        with pytest.raises(Aborted) as e:
            fn(control_pb2.ListRequest(label_selector="app=web,,"), Context())
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert str(e.value).startswith("StatusCode.INVALID_ARGUMENT: label_selector: ")

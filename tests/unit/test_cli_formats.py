"""`get`'s kubectl-style outputs: -o name|jsonpath|custom-columns, --sort-by, --show-labels.

Each works on the JSON form `-o json` prints (cli/output.py's item_dicts),
for every kind, through the same `render` that `get` calls.
"""

from __future__ import annotations

import argparse
import json

import pytest

from mctl.cli import columns, jsonpath, output
from mctl.cli.main import render
from mctl.v1 import control_pb2, types_pb2


def replicas() -> control_pb2.ReplicaList:
    resp = control_pb2.ReplicaList()
    for name, node, restarts, labels in [("web-b", "n2", 3, {"app": "web"}),
                                         ("web-a", "n1", 10, {"app": "web", "x.io/t": "1"}),
                                         ("db-a", "n3", 0, {})]:
        r = resp.items.add(workload=name.split("-")[0], node=node)
        r.metadata.namespace, r.metadata.name = "shop", name
        r.metadata.labels.update(labels)
        r.status.phase = types_pb2.REPLICA_PHASE_RUNNING
        r.status.restarts = restarts
        resp.usage.add(memory_bytes=restarts << 20)
    return resp


def nodes() -> control_pb2.NodeList:
    resp = control_pb2.NodeList()
    for name, zone in [("n2", "b"), ("n1", "a")]:
        resp.items.add(name=name, labels={"zone": zone}, ready=True)
        resp.allocated.add()
        resp.usage.add()
        resp.replicas.append(int(name[1]))
    return resp


def args(output: str = "table", **kw: object) -> argparse.Namespace:
    return argparse.Namespace(**{"output": output, "name": None, "all_namespaces": False,
                                 "namespace": "shop", "sort_by": None, "show_labels": False,
                                 **kw})


def test_name_output_is_kind_slash_name():
    assert (render("replicas", replicas(), args("name"))
            == "replica/web-b\nreplica/web-a\nreplica/db-a")
    assert render("nodes", nodes(), args("name")) == "node/n2\nnode/n1"


@pytest.mark.parametrize(("template", "printed"), [
    ("{.items[*].metadata.name}", "web-b web-a db-a"),
    ("{.items[0].node}", "n2"),
    ('{range .items[*]}{.metadata.name}:{.status.restarts}{"\\n"}{end}',
     "web-b:3\nweb-a:10\ndb-a:\n"),          # -o json leaves zeros out, as proto3 JSON does
    ("{range .items}[{.node}]{end}", "[n2][n1][n3]"),
    ('{.items[?(@.node=="n3")].metadata.name}', "db-a"),
    ("{.items[?(@.status.restarts>2)].metadata.name}", "web-b web-a"),
    ("{.items[1].metadata.labels['x.io/t']}", "1"),
    ("{.items[1].metadata.labels.x\\.io/t}", "1"),      # kubectl's escaped dots
    ("{.items[0].metadata.labels}", '{"app":"web"}'),
    ("names: {.items[*].nothing}.", "names: ."),    # missing: nothing, as kubectl's get
    ('{"{"}{.items[2].workload}{"}"}', "{db}"),
])
def test_jsonpath_templates_print_as_kubectl(template, printed):
    assert render("replicas", replicas(), args("jsonpath=" + template)) == printed


def test_jsonpath_of_one_named_object_is_over_the_object():
    resp = replicas()
    del resp.items[1:]
    del resp.usage[1:]
    assert render("replicas", resp, args("jsonpath={.metadata.name}", name="web-b")) == "web-b"


@pytest.mark.parametrize(("template", "says"), [
    ("{.items[", "unclosed"),
    ("{range .items[*]}x", "without {end}"),
    ("x{end}", "{end} without"),
    ("{}", "empty"),
    ("{.items[?(@.a==]}", "is not a JSONPath"),
    ("{" * 5000, "longer than"),
])
def test_bad_templates_say_what_is_wrong(template, says):
    with pytest.raises(jsonpath.TemplateError, match=say_re(says)):
        jsonpath.parse_template(template)


def say_re(text: str) -> str:
    return "".join("\\" + c if c in "{}[]()?*." else c for c in text)


def test_custom_columns_make_a_table_with_none_for_missing():
    text = render("replicas", replicas(),
                  args("custom-columns=NAME:.metadata.name,NODE:{.node},APP:.metadata.labels.app"))
    assert text.splitlines() == ["NAME    NODE   APP",
                                 "web-b   n2     web",
                                 "web-a   n1     web",
                                 "db-a    n3     <none>"]


@pytest.mark.parametrize("spec", ["NAME", "NAME:", ":.a", "A:.a," * 40])
def test_bad_custom_columns_are_refused(spec):
    with pytest.raises(jsonpath.TemplateError):
        columns.parse_columns(spec)


def test_sort_by_orders_items_and_the_lists_beside_them():
    resp = replicas()
    text = render("replicas", resp, args("custom-columns=N:.metadata.name",
                                         sort_by=".status.restarts"))
    assert text.split()[1:] == ["db-a", "web-b", "web-a"]    # 0 < 3 < 10: numbers by value
    # The usage that runs alongside the items moved with them.
    assert [u.memory_bytes >> 20 for u in resp.usage] == [0, 3, 10]
    resp = nodes()
    render("nodes", resp, args(sort_by="{.name}"))
    assert [n.name for n in resp.items] == ["n1", "n2"] and list(resp.replicas) == [1, 2]


def test_sort_by_puts_items_without_the_field_first():
    order = columns.sort_order(".metadata.labels['x.io/t']", output.item_dicts(replicas()))
    assert order[-1] == 1      # web-a, the only one with the label, last


def test_sort_by_numbers_written_as_strings_by_value():
    # proto3 JSON writes int64 fields as strings: "9" must come before "10".
    items = [{"v": "10"}, {"v": "9"}, {"v": "x"}]
    assert columns.sort_order(".v", items) == [1, 0, 2]


def test_show_labels_adds_a_column_to_any_table():
    lines = render("replicas", replicas(), args(show_labels=True)).splitlines()
    assert lines[0].split()[-1] == "LABELS"
    assert lines[1].endswith("app=web") and lines[2].endswith("app=web,x.io/t=1")
    assert lines[3].endswith("<none>")
    # Nodes' wide table has LABELS already: not twice.
    wide = render("nodes", nodes(), args("wide", show_labels=True)).splitlines()[0]
    assert wide.split().count("LABELS") == 1


def test_json_output_is_what_paths_select_from():
    doc = json.loads(render("replicas", replicas(), args("json")))
    assert [i["metadata"]["name"] for i in doc["items"]] == ["web-b", "web-a", "db-a"]
    assert doc["items"][0]["status"]["phase"] == "Running"

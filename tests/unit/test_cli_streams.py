"""The CLI's side of the watch streams (cli/watch.py, cli/events.py) and `mctl version`.

The stub is replaced by one whose streams are scripted: a list, changes,
then a broken connection, then another scheduler's list.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from mctl.cli import events as cli_events
from mctl.cli import main as cli
from mctl.cli import version as cli_version
from mctl.cli import watch
from mctl.cli.client import CliError, UsageError
from mctl.common import reasons
from mctl.v1 import control_pb2, types_pb2

ADDED = control_pb2.WATCH_CHANGE_TYPE_ADDED
MODIFIED = control_pb2.WATCH_CHANGE_TYPE_MODIFIED
DELETED = control_pb2.WATCH_CHANGE_TYPE_DELETED


class Failed(grpc.RpcError, grpc.Call):
    def __init__(self, code: grpc.StatusCode, reason: str = "") -> None:
        self._code = code
        self._reason = reason

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "scripted"

    def trailing_metadata(self) -> Any:
        return ((reasons.KEY, self._reason),) if self._reason else ()

    def initial_metadata(self) -> Any:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False


def rep(name: str, version: str, phase: int = types_pb2.REPLICA_PHASE_RUNNING,
        type_: int = ADDED) -> control_pb2.WatchChange:
    c = control_pb2.WatchChange(type=type_, version=version)  # type: ignore[arg-type]
    c.replica.metadata.namespace, c.replica.metadata.name = "default", name
    c.replica.status.phase = phase  # type: ignore[assignment]
    return c


def listed(*changes: control_pb2.WatchChange) -> list[control_pb2.WatchObjectsResponse]:
    return [control_pb2.WatchObjectsResponse(changes=list(changes)),
            control_pb2.WatchObjectsResponse(synced=True)]


class Scripted:
    """A stub whose calls play the scripts in turn; an exception in a script is raised."""

    def __init__(self, scripts: list[list[Any]]) -> None:
        self.scripts = scripts
        self.calls = 0

    def _play(self, request: Any, timeout: Any = None) -> Iterator[Any]:
        script = self.scripts[self.calls]
        self.calls += 1
        for item in script:
            if isinstance(item, Exception):
                raise item
            yield item

    WatchObjects = _play
    WatchEvents = _play


def args(**kw: Any) -> argparse.Namespace:
    base = dict(output="table", all_namespaces=False, server_address="s:1", tls_on=False,
                namespace="default")
    return argparse.Namespace(**(base | kw))


@pytest.fixture(autouse=True)
def no_pause(monkeypatch):
    monkeypatch.setattr(watch.time, "sleep", lambda _: None)


def test_get_w_resumes_on_another_scheduler_without_duplicates(monkeypatch, capsys):
    stub = Scripted([
        [*listed(rep("web-a", "5"), rep("web-b", "6")),
         control_pb2.WatchObjectsResponse(changes=[rep("web-c", "7")]),
         Failed(grpc.StatusCode.UNAVAILABLE)],                    # the leader dies
        [Failed(grpc.StatusCode.UNAVAILABLE)],                    # nobody answers yet
        # Another scheduler: web-a unchanged, web-b changed, web-c gone, web-d new.
        [*listed(rep("web-a", "5"), rep("web-b", "9", types_pb2.REPLICA_PHASE_FAILED),
                 rep("web-d", "10")),
         Failed(grpc.StatusCode.PERMISSION_DENIED)],              # ends the test
    ])
    monkeypatch.setattr(watch, "stub", lambda _: stub)
    with pytest.raises(CliError):
        watch.watch(args(), "replicas", "default", "")
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == ["NAME", "web-a", "web-b", "web-c", "web-b", "web-d", "web-c"]
    assert "Failed" in lines[4]
    assert stub.calls == 3


def test_get_w_prints_no_row_for_a_change_the_table_does_not_show(monkeypatch, capsys):
    # web-a's record changes (a status message, say) but not its row; then its phase does.
    quiet = rep("web-a", "6", type_=MODIFIED)
    quiet.replica.status.message = "readiness probe passed"
    stub = Scripted([
        [*listed(rep("web-a", "5")),
         control_pb2.WatchObjectsResponse(changes=[quiet]),
         control_pb2.WatchObjectsResponse(
             changes=[rep("web-a", "7", types_pb2.REPLICA_PHASE_FAILED, MODIFIED)]),
         control_pb2.WatchObjectsResponse(
             changes=[rep("web-a", "7", types_pb2.REPLICA_PHASE_FAILED, DELETED)]),
         Failed(grpc.StatusCode.PERMISSION_DENIED)],
    ])
    monkeypatch.setattr(watch, "stub", lambda _: stub)
    with pytest.raises(CliError):
        watch.watch(args(), "replicas", "default", "")
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["web-a", "web-a", "web-a"]
    assert "Running" in rows[0] and "Failed" in rows[1]
    assert rows[2].split() == rows[1].split()       # the deletion is printed, as its last row


def test_get_w_show_labels_adds_the_column_and_a_label_change_prints_a_row(monkeypatch,
                                                                         capsys):
    labelled = rep("web-a", "5")
    labelled.replica.metadata.labels.update({"app": "web", "tier": "front"})
    relabelled = rep("web-a", "6", type_=MODIFIED)
    relabelled.replica.metadata.labels["app"] = "web"     # only a label changed
    stub = Scripted([
        [*listed(labelled, rep("web-b", "4")),
         control_pb2.WatchObjectsResponse(changes=[relabelled]),
         Failed(grpc.StatusCode.PERMISSION_DENIED)],
    ])
    monkeypatch.setattr(watch, "stub", lambda _: stub)
    with pytest.raises(CliError):
        watch.watch(args(show_labels=True), "replicas", "default", "")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-1] == "LABELS"
    assert [(line.split()[0], line.split()[-1]) for line in lines[1:]] == [
        ("web-a", "app=web,tier=front"), ("web-b", "<none>"), ("web-a", "app=web")]


def test_get_w_show_labels_keeps_the_wide_node_table_as_get_prints_it(monkeypatch, capsys):
    node = control_pb2.WatchChange(type=ADDED, version="1")
    node.node.name = "n1"
    node.node.labels["zone"] = "a"
    stub = Scripted([[*listed(node), Failed(grpc.StatusCode.PERMISSION_DENIED)]])
    monkeypatch.setattr(watch, "stub", lambda _: stub)
    with pytest.raises(CliError):
        watch.watch(args(show_labels=True, output="wide"), "nodes", "", "")
    header, row = capsys.readouterr().out.splitlines()
    assert header.split().count("LABELS") == 1      # wide nodes have it already
    assert row.split()[-1] == "zone=a"


def test_get_w_before_a_first_list_fails_at_once(monkeypatch):
    stub = Scripted([[Failed(grpc.StatusCode.UNAVAILABLE)]])
    monkeypatch.setattr(watch, "stub", lambda _: stub)
    with pytest.raises(CliError, match="cannot reach"):
        watch.watch(args(), "replicas", "default", "")
    assert stub.calls == 1


def test_get_w_a_named_object_that_does_not_exist(monkeypatch):
    monkeypatch.setattr(watch, "stub", lambda _: Scripted([listed()]))
    with pytest.raises(CliError, match="replica web-x not found in namespace default"):
        watch.watch(args(), "replicas", "default", "web-x")


def test_get_w_gives_up_after_the_reconnect_window(monkeypatch):
    clock = iter(range(0, 10_000, 7))
    monkeypatch.setattr(watch.time, "monotonic", lambda: float(next(clock)))
    stub = Scripted([listed(rep("web-a", "1"))] + [[Failed(grpc.StatusCode.UNAVAILABLE)]] * 50)
    monkeypatch.setattr(watch, "stub", lambda _: stub)
    with pytest.raises(CliError, match="could not be resumed for 60s"):
        watch.watch(args(), "replicas", "default", "")
    assert stub.calls < 20


def test_get_w_json_prints_the_list_then_one_document_per_change(monkeypatch, capsys):
    stub = Scripted([[*listed(rep("web-a", "1")),
                      control_pb2.WatchObjectsResponse(changes=[rep("web-a", "2", type_=MODIFIED)]),
                      Failed(grpc.StatusCode.INVALID_ARGUMENT)]])
    monkeypatch.setattr(watch, "stub", lambda _: stub)
    with pytest.raises(CliError):
        watch.watch(args(output="json"), "replicas", "default", "")
    out = capsys.readouterr().out
    decoder = json.JSONDecoder()
    first, end = decoder.raw_decode(out)
    second, _ = decoder.raw_decode(out[end:].lstrip())
    assert [d["metadata"]["name"] for d in first["items"]] == ["web-a"]
    assert [d["metadata"]["name"] for d in second["items"]] == ["web-a"]


def test_the_first_retry_is_at_once_then_backs_off():
    assert [watch.pause(a) for a in range(6)] == [0.0, 0.2, 0.4, 0.8, 1.6, 2.0]


def test_resync_compares_versions():
    shown = {("default", "a"): rep("a", "1"), ("default", "b"): rep("b", "2")}
    new = {("default", "a"): rep("a", "1"), ("default", "c"): rep("c", "3")}
    out = watch.resync(shown, new)
    assert [(c.replica.metadata.name, c.type) for c in out] == [("c", ADDED), ("b", DELETED)]
    assert set(shown) == set(new)


@pytest.mark.parametrize(("error", "expected"), [
    (Failed(grpc.StatusCode.UNAVAILABLE), True),
    (Failed(grpc.StatusCode.CANCELLED), True),
    (Failed(grpc.StatusCode.RESOURCE_EXHAUSTED, reasons.WATCH_FELL_BEHIND), True),
    (Failed(grpc.StatusCode.RESOURCE_EXHAUSTED), False),        # too many streams: say so
    (Failed(grpc.StatusCode.PERMISSION_DENIED), False),
])
def test_what_is_resumed(error, expected):
    assert watch.resumable(error) is expected


def ev(reason: str, ms: int) -> types_pb2.Event:
    return types_pb2.Event(kind="Replica", namespace="default", name="web-a", type="Normal",
                           reason=reason, message="m", unix_ms=ms)


def test_events_w_resumes_and_prints_each_event_once(monkeypatch, capsys):
    stub = Scripted([
        [control_pb2.WatchEventsResponse(items=[ev("Started", 1)], ids=["i1"]),
         control_pb2.WatchEventsResponse(synced=True),
         control_pb2.WatchEventsResponse(items=[ev("Killed", 2)], ids=["i2"]),
         Failed(grpc.StatusCode.UNAVAILABLE)],
        [control_pb2.WatchEventsResponse(items=[ev("Started", 1), ev("Killed", 2),
                                                ev("Pulled", 3)], ids=["i1", "i2", "i3"]),
         control_pb2.WatchEventsResponse(synced=True),
         Failed(grpc.StatusCode.UNAUTHENTICATED)],
    ])
    monkeypatch.setattr(cli_events, "stub", lambda _: stub)
    with pytest.raises(CliError):
        cli_events.cmd_events(args(watch=True, for_=None))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert [line.split()[2] for line in lines[1:]] == ["Started", "Killed", "Pulled"]
    assert lines[1].split()[3] == "replica/web-a"


def test_events_list_of_nothing_says_so(monkeypatch, capsys):
    monkeypatch.setattr(cli_events, "stub",
                        lambda _: Scripted([[control_pb2.WatchEventsResponse(synced=True)]]))
    assert cli_events.cmd_events(args(watch=False, for_=None)) == 0
    assert capsys.readouterr().out == "No events found in namespace default.\n"


@pytest.mark.parametrize(("text", "expected"), [
    ("replica/web-a", ("Replica", "web-a")), ("wl/web", ("Workload", "web")),
    ("Node/n1", ("Node", "n1"))])
def test_for_accepts_kubectl_kind_spellings(text, expected):
    assert cli_events.parse_for(text) == expected


@pytest.mark.parametrize("text", ["web-a", "pod/x", "replica/", "replica/Bad_Name"])
def test_for_refuses_with_the_flag_named(text):
    with pytest.raises(UsageError, match="^--for"):
        cli_events.parse_for(text)


def test_seen_ids_are_bounded():
    seen = cli_events.Seen(limit=3)
    assert all(seen.add(i) for i in "abcd")
    assert not seen.add("d")
    assert seen.add("a")             # forgotten: the oldest went past the bound


def test_version_client_needs_no_server(capsys, monkeypatch):
    monkeypatch.setattr(cli_version, "stub", lambda _: pytest.fail("dialled"))
    cli_version.cmd_version(args(client=True, output="table"))
    assert capsys.readouterr().out.startswith("Client Version: ")
    cli_version.cmd_version(args(client=True, output="json"))
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"clientVersion"} and doc["clientVersion"]["version"]


def test_version_parser_is_registered():
    parsed = cli.build_parser().parse_args(["version", "--client", "-o", "yaml"])
    assert parsed.client and parsed.output == "yaml"

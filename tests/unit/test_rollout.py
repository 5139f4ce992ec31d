"""Spec revisions, scale, rollout undo/restart and the apply dry run, on the in-memory store.

revisions.py's rules (what makes a revision, the bound, a template seen
again taking the older one's place) are checked on its pure functions; the
services (api.py with rollout.py) on fake_store.py, as test_scheduler_api.py
does, including that a dry run commits nothing (the store's revision does
not move).
"""

from __future__ import annotations

import grpc
import pytest
from fake_store import FakeStore
from test_scheduler_api import Aborted, Cluster, Context, workload

from mctl.cli import rollout as cli_rollout
from mctl.common.spec import parse_objects, spec_hash
from mctl.scheduler import revisions
from mctl.v1 import control_pb2, types_pb2


def spec(image: str, replicas: int = 1) -> types_pb2.WorkloadSpec:
    return types_pb2.WorkloadSpec(image=image, replicas=replicas)


def history(store: FakeStore, images: list[str], limit: int = 3) -> list[revisions.Stored]:
    """Records each image's spec in turn, committing as the API would."""
    for n, image in enumerate(images):
        writes, _ = revisions.record(revisions.read(store, "ns", "w"), spec(image), "apply",
                                     1000 + n, lambda i: store.keys.revision("ns", "w", i), limit)
        store.commit(writes)
    return revisions.read(store, "ns", "w")


def test_history_keeps_the_last_limit_templates_in_order():
    stored = history(FakeStore(), ["a", "b", "c", "d", "e"])
    assert [(s.revision.number, s.revision.spec.image) for s in stored] == [
        (3, "c"), (4, "d"), (5, "e")]
    assert stored[0].revision.change_cause == "apply"
    assert stored[0].revision.created_unix_ms == 1002


def test_a_template_seen_again_takes_the_older_ones_place():
    stored = history(FakeStore(), ["a", "b", "a"])
    assert [(s.revision.number, s.revision.spec.image) for s in stored] == [(2, "b"), (3, "a")]
    assert revisions.current(stored, spec("a", replicas=7)) == 3
    prev = revisions.previous(stored, spec("a"))
    assert prev is not None and prev.revision.number == 2


def test_replicas_update_and_restart_marker_are_outside_the_template():
    a = spec("a", replicas=1)
    b = spec("a", replicas=9)
    b.update.max_surge = 3
    b.restarted_at_unix_ms = 42
    assert revisions.template_hash(a) == revisions.template_hash(b)
    # ...while the restart marker does change what replicas run (the spec hash).
    assert spec_hash(a) != spec_hash(b)


def test_keys_sort_as_numbers_and_a_limit_below_one_is_refused():
    store = FakeStore()
    assert store.keys.revision("ns", "w", 9) < store.keys.revision("ns", "w", 10)
    assert store.keys.parse(store.keys.revision("ns", "w", 1)) is None  # never in a snapshot
    with pytest.raises(ValueError):
        revisions.record([], spec("a"), "apply", 0, lambda n: "k", limit=0)


# -- the services --------------------------------------------------------------------


@pytest.fixture
def cluster():
    c = Cluster()
    yield c
    c.close()


def with_image(image: str, replicas: int = 2, name: str = "web") -> types_pb2.Workload:
    w = workload(name, replicas)
    w.spec.image = image
    return w


def stored(cluster: Cluster, name: str = "web") -> types_pb2.Workload:
    raw, _ = cluster.store.get(cluster.store.keys.workload("default", name))
    assert raw is not None
    return types_pb2.Workload.FromString(raw)


def revs(cluster: Cluster, name: str = "web") -> list[tuple[int, str, str]]:
    resp = cluster.api.RolloutHistory(
        control_pb2.RolloutHistoryRequest(namespace="default", name=name), Context())
    return [(r.number, r.spec.image, r.change_cause) for r in resp.revisions]


def test_apply_records_a_revision_per_template_in_the_same_transaction(cluster):
    cluster.apply(with_image("busybox:1"))
    commits = cluster.store.commits
    cluster.apply(with_image("busybox:2"))
    assert cluster.store.commits == commits + 1      # workload and revision together
    cluster.apply(with_image("busybox:2", replicas=5))   # scaling: no revision
    assert revs(cluster) == [(1, "busybox:1", "apply"), (2, "busybox:2", "apply")]


def test_history_is_bounded_per_workload(cluster):
    for i in range(revisions.DEFAULT_LIMIT + 4):
        cluster.apply(with_image(f"busybox:{i}"))
    numbers = [n for n, _, _ in revs(cluster)]
    assert numbers == list(range(5, revisions.DEFAULT_LIMIT + 5))


def test_scale_changes_only_replicas_within_the_apply_bounds(cluster):
    cluster.apply(with_image("busybox:1"))
    before = stored(cluster)
    resp = cluster.api.Scale(control_pb2.ScaleRequest(name="web", replicas=4), Context())
    assert (resp.previous, resp.changed) == (2, True)
    after = stored(cluster)
    assert after.spec.replicas == 4
    assert spec_hash(after.spec) == spec_hash(before.spec)
    assert len(revs(cluster)) == 1
    assert "Scaled" in cluster.events.reasons("web")
    with pytest.raises(Aborted) as e:
        cluster.api.Scale(control_pb2.ScaleRequest(name="web", replicas=-1), Context())
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.replicas" in e.value.details
    with pytest.raises(Aborted) as e:
        cluster.api.Scale(control_pb2.ScaleRequest(name="nope", replicas=1), Context())
    assert e.value.code == grpc.StatusCode.NOT_FOUND


def test_undo_returns_to_the_previous_template_as_a_new_revision(cluster):
    first = with_image("busybox:1")
    first.spec.args[:] = ["one"]
    cluster.apply(first)
    pinned = stored(cluster).spec
    cluster.apply(with_image("busybox:2"))
    cluster.api.Scale(control_pb2.ScaleRequest(name="web", replicas=3), Context())
    resp = cluster.api.RolloutUndo(control_pb2.RolloutUndoRequest(name="web"), Context())
    assert (resp.changed, resp.revision) == (True, 3)
    now = stored(cluster)
    assert (now.spec.image, list(now.spec.args), now.spec.replicas) == ("busybox:1", ["one"], 3)
    assert now.spec.image_digest == pinned.image_digest
    assert revs(cluster) == [(2, "busybox:2", "apply"),
                             (3, "busybox:1", "rollout undo to revision 1")]
    # Undo again: back to 2, which now becomes 4.
    cluster.api.RolloutUndo(control_pb2.RolloutUndoRequest(name="web"), Context())
    assert stored(cluster).spec.image == "busybox:2"
    # A revision already current is skipped; one not kept is named.
    resp = cluster.api.RolloutUndo(control_pb2.RolloutUndoRequest(name="web", to_revision=4),
                                   Context())
    assert not resp.changed and "skipped" in resp.message
    with pytest.raises(Aborted) as e:
        cluster.api.RolloutUndo(control_pb2.RolloutUndoRequest(name="web", to_revision=1),
                                Context())
    assert e.value.code == grpc.StatusCode.NOT_FOUND and "kept: 3, 4" in e.value.details


def test_undo_without_a_previous_revision_says_so(cluster):
    cluster.apply(with_image("busybox:1"))
    with pytest.raises(Aborted) as e:
        cluster.api.RolloutUndo(control_pb2.RolloutUndoRequest(name="web"), Context())
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_restart_changes_the_spec_hash_and_survives_a_reapply(cluster):
    cluster.apply(with_image("busybox:1"))
    before = spec_hash(stored(cluster).spec)
    resp = cluster.api.RolloutRestart(control_pb2.RolloutRestartRequest(name="web"), Context())
    assert resp.changed
    after = stored(cluster)
    assert spec_hash(after.spec) != before and after.spec.restarted_at_unix_ms > 0
    assert len(revs(cluster)) == 1
    # Re-applying the same file does not undo the restart (nor roll again).
    assert [r.action for r in cluster.apply(with_image("busybox:1")).results] == ["unchanged"]
    assert stored(cluster).spec.restarted_at_unix_ms == after.spec.restarted_at_unix_ms


def test_delete_takes_the_history_with_it(cluster):
    cluster.apply(with_image("busybox:1"))
    cluster.apply(with_image("busybox:2"))
    cluster.api.Delete(control_pb2.DeleteRequest(workloads=[
        control_pb2.ObjectRef(namespace="default", name="web")]), Context())
    assert cluster.store.get_prefix_meta(cluster.store.keys.revisions_prefix()) == []


def test_a_dry_run_plans_and_stores_nothing(cluster):
    cluster.apply(with_image("busybox:1"))
    rev = cluster.store.revision()
    request = control_pb2.ApplyRequest(
        workloads=[with_image("busybox:2"), with_image("busybox:1", replicas=5, name="api")],
        dry_run=True)
    resp = cluster.api.Apply(request, Context())
    assert cluster.store.revision() == rev
    web, api = resp.results
    assert (web.action, web.rolls, api.action) == ("configured", True, "created")
    assert web.stored_workload.spec.image == "busybox:1"
    assert web.planned_workload.spec.image == "busybox:2"
    assert not api.HasField("stored_workload")
    # In place: only the replica count changes.
    resp = cluster.api.Apply(control_pb2.ApplyRequest(
        workloads=[with_image("busybox:1", replicas=3)], dry_run=True), Context())
    assert (resp.results[0].action, resp.results[0].rolls) == ("configured", False)
    lines = cli_rollout.unified(resp.results[0])
    assert "-  replicas: 2\n" in lines and "+  replicas: 3\n" in lines
    assert cli_rollout.plan_line(resp.results[0]) == \
        "workload/web configured in place (server dry run)"
    # Invalid input is refused as by a real apply, naming the field.
    bad = with_image("busybox:1")
    bad.spec.replicas = -3
    with pytest.raises(Aborted) as e:
        cluster.api.Apply(control_pb2.ApplyRequest(workloads=[bad], dry_run=True), Context())
    assert "spec.replicas" in e.value.details
    assert cluster.store.revision() == rev


def test_a_dry_run_of_a_config_names_the_workloads_it_rolls(cluster):
    text = """
apiVersion: mctl/v1
kind: Config
metadata: {name: settings}
data: {a.conf: "one"}
---
apiVersion: mctl/v1
kind: Workload
metadata: {name: web}
spec:
  image: busybox
  resources: {cpu: 100m, memory: 16Mi}
  volumes: [{name: s, config: settings}]
  volumeMounts: [{name: s, mountPath: /etc/s}]
"""
    config, w = parse_objects(text, "t.yaml")
    assert isinstance(config, types_pb2.Config) and isinstance(w, types_pb2.Workload)
    cluster.api.Apply(control_pb2.ApplyRequest(configs=[config], workloads=[w]), Context())
    config.data["a.conf"] = "two"
    rev = cluster.store.revision()
    resp = cluster.api.Apply(control_pb2.ApplyRequest(configs=[config], dry_run=True),
                             Context())
    assert cluster.store.revision() == rev
    r = resp.results[0]
    assert (r.kind, r.rolls, list(r.rolled_workloads)) == ("Config", True, ["web"])
    assert cli_rollout.plan_line(r) == "config/settings configured, rolls workload web" \
                                       " (server dry run)"
    assert '-  a.conf: one\n' in cli_rollout.unified(r)


class CountingResolver:
    """Answers every tag with one digest, counting the registry round trips."""

    def __init__(self) -> None:
        self.asked = 0

    def resolve(self, ref: str, auth: bytes | None = None) -> str:
        self.asked += 1
        return "sha256:" + "ab" * 32


def test_a_restart_does_not_make_the_next_apply_ask_the_registry_again(cluster):
    resolver = CountingResolver()
    cluster.api.image_resolver = resolver  # type: ignore[assignment]
    cluster.apply(with_image("reg.local:5000/app:1"))
    assert resolver.asked == 1
    cluster.api.RolloutRestart(control_pb2.RolloutRestartRequest(name="web"), Context())
    assert [r.action for r in cluster.apply(with_image("reg.local:5000/app:1")).results] == \
        ["unchanged"]
    assert resolver.asked == 1


@pytest.mark.parametrize("argv", [["scale"], ["rollout"], ["rollout", "status"],
                                  ["rollout", "history"], ["rollout", "undo"],
                                  ["rollout", "restart"], ["diff"]])
def test_every_verb_here_has_an_example_in_its_help(argv, capsys):
    from mctl.cli import main as cli

    with pytest.raises(SystemExit) as e:
        cli.main([*argv, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:\n  mctl " + " ".join(argv) in out, out


def test_rollout_status_says_what_it_waits_for_in_kubectls_words():
    w = with_image("busybox:1", replicas=3)

    def line(up_to_date: int, present: int, ready: int) -> str | None:
        return cli_rollout.progress("web", w, control_pb2.WorkloadSummary(
            desired=3, up_to_date=up_to_date, present=present, up_to_date_ready=ready))
    assert line(1, 4, 0) == ('Waiting for workload "web" rollout to finish: 1 out of 3 new'
                             ' replicas have been updated...')
    assert line(3, 4, 3).endswith(": 1 old replicas are pending termination...")
    assert line(3, 3, 2).endswith(": 2 of 3 updated replicas are available...")
    assert line(3, 3, 3) is None


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("5m", 300),
                                               ("1.5h", 5400)])
def test_durations_read_as_kubectl_writes_them(text, seconds):
    assert cli_rollout.duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "-1s", "0", "nan", "inf", "5d"])
def test_bad_durations_are_refused(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        cli_rollout.duration(text)

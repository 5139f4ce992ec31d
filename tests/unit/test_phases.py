"""Replica phases and reasons: one vocabulary from the agent to what users read.

The enums travel and are stored; users (tables, describe, `-o json|yaml`)
keep reading the names SPEC.md gives them, exactly as before the enums.
"""

from __future__ import annotations

import json
import types

import pytest

from mctl.agent.containers import Container
from mctl.agent.node import NodeLoop, exit_reason
from mctl.agent.runtime.state import Exit
from mctl.cli import output
from mctl.common import phases
from mctl.scheduler import converters
from mctl.scheduler.model import TERMINAL_PHASES, Phase
from mctl.v1 import control_pb2, types_pb2

# What users have always read; every enum value must be here, so that a new
# one cannot reach them without a name chosen on purpose.
PHASE_NAMES = {
    types_pb2.REPLICA_PHASE_UNSPECIFIED: "Pending",
    types_pb2.REPLICA_PHASE_PENDING: "Pending",
    types_pb2.REPLICA_PHASE_STARTING: "Starting",
    types_pb2.REPLICA_PHASE_RUNNING: "Running",
    types_pb2.REPLICA_PHASE_SUCCEEDED: "Succeeded",
    types_pb2.REPLICA_PHASE_FAILED: "Failed",
    types_pb2.REPLICA_PHASE_TERMINATING: "Terminating",
}
REASON_NAMES = {
    types_pb2.REPLICA_REASON_UNSPECIFIED: "",
    types_pb2.REPLICA_REASON_UNSCHEDULABLE: "Unschedulable",
    types_pb2.REPLICA_REASON_DRAINED: "Drained",
    types_pb2.REPLICA_REASON_NODE_NOT_READY: "NodeNotReady",
    types_pb2.REPLICA_REASON_COMPLETED: "Completed",
    types_pb2.REPLICA_REASON_ERROR: "Error",
    types_pb2.REPLICA_REASON_OOM_KILLED: "OOMKilled",
    types_pb2.REPLICA_REASON_UNHEALTHY: "Unhealthy",
    types_pb2.REPLICA_REASON_START_ERROR: "StartError",
    types_pb2.REPLICA_REASON_MONITOR_LOST: "MonitorLost",
    types_pb2.REPLICA_REASON_CRASH_LOOP_BACK_OFF: "CrashLoopBackOff",
    types_pb2.REPLICA_REASON_CREATE_ERROR: "CreateError",
    types_pb2.REPLICA_REASON_DISK_LIMIT: "DiskLimit",
    types_pb2.REPLICA_REASON_IMAGE_PULL_ERROR: "ImagePullError",
}


def test_every_phase_has_the_name_users_read():
    assert set(PHASE_NAMES) == set(types_pb2.ReplicaPhase.values())
    assert {p: phases.phase_name(p) for p in PHASE_NAMES} == PHASE_NAMES


def test_every_reason_has_the_name_users_read():
    assert set(REASON_NAMES) == set(types_pb2.ReplicaReason.values())
    assert {r: phases.reason_name(r) for r in REASON_NAMES} == REASON_NAMES


def test_values_from_a_newer_peer_show_their_number():
    assert phases.phase_name(99) == "Phase99"
    assert phases.reason_name(99) == "Reason99"


def test_the_old_string_fields_are_never_reused():
    # Stored records and older peers carry phase and reason as strings in
    # fields 1 and 2: an enum there would misread them.
    status = types_pb2.ReplicaStatus.DESCRIPTOR
    assert status.fields_by_name["phase"].number not in (1, 2)
    assert status.fields_by_name["reason"].number not in (1, 2)
    assert {f.number for f in status.fields}.isdisjoint({1, 2})
    old = b"\x0a\x07Running\x12\x09OOMKilled"   # field 1 "Running", field 2 "OOMKilled"
    parsed = types_pb2.ReplicaStatus.FromString(old)
    assert (parsed.phase, parsed.reason) == (types_pb2.REPLICA_PHASE_UNSPECIFIED,
                                             types_pb2.REPLICA_REASON_UNSPECIFIED)


def test_terminal_phases_agree_between_proto_and_model():
    assert phases.TERMINAL == {types_pb2.REPLICA_PHASE_SUCCEEDED, types_pb2.REPLICA_PHASE_FAILED}
    assert {converters.phase(p) for p in phases.TERMINAL} == TERMINAL_PHASES
    assert [p for p in PHASE_NAMES if phases.is_terminal(p)] == sorted(phases.TERMINAL)


@pytest.mark.parametrize("proto", list(PHASE_NAMES))
def test_the_model_phase_is_the_proto_phase_of_the_same_name(proto):
    model = converters.phase(proto)
    assert model.name.capitalize() == PHASE_NAMES[proto]
    r = types_pb2.Replica()
    r.status.phase = proto
    assert converters.replica_view(r).phase is model


def test_every_model_phase_comes_from_the_proto_and_unknown_ones_are_pending():
    assert {converters.phase(p) for p in PHASE_NAMES} == set(Phase)
    assert converters.phase(types_pb2.REPLICA_PHASE_UNSPECIFIED) is Phase.PENDING
    assert converters.phase(99) is Phase.PENDING


# -- the agent sets them ---------------------------------------------------------


@pytest.mark.parametrize(("ex", "reason", "detail"), [
    (Exit(0), types_pb2.REPLICA_REASON_COMPLETED, "exit code 0"),
    (Exit(3), types_pb2.REPLICA_REASON_ERROR, "exit code 3"),
    (Exit(137, oom_killed=True), types_pb2.REPLICA_REASON_OOM_KILLED, "exit code 137"),
    (Exit(1, unhealthy="health check failed 3 times"), types_pb2.REPLICA_REASON_UNHEALTHY,
     "health check failed 3 times (exit code 1)"),
    (Exit.start_failed("no such file: /app"), types_pb2.REPLICA_REASON_START_ERROR,
     "no such file: /app"),
    (Exit.monitor_lost(), types_pb2.REPLICA_REASON_MONITOR_LOST, "exit code 255"),
])
def test_exit_reasons(ex, reason, detail):
    assert exit_reason(ex) == (reason, detail)


def container(policy: str = "Never", **kw: object) -> Container:
    r = types_pb2.Replica(spec_hash="h")
    r.metadata.name, r.metadata.uid = "web-a", "u1"
    r.spec.restart_policy = policy
    return Container("c1", "/b", r, "/cg", **kw)  # type: ignore[arg-type]


def status(c: Container) -> types_pb2.ReplicaStatus:
    loop = NodeLoop(types.SimpleNamespace(), types.SimpleNamespace(),  # type: ignore[arg-type]
                    lambda report: None, "n1", 1.0)
    return loop.status_of(c, now=10_000)


def test_the_agent_reports_phases_and_reasons_as_enums():
    running = status(container(monitor_pid=7))
    assert (running.phase, running.reason) == (types_pb2.REPLICA_PHASE_RUNNING,
                                               types_pb2.REPLICA_REASON_UNSPECIFIED)
    assert status(container()).phase == types_pb2.REPLICA_PHASE_STARTING
    assert status(container(busy=True)).phase == types_pb2.REPLICA_PHASE_TERMINATING
    sick = status(container(monitor_pid=7, unhealthy="health check failed"))
    assert (sick.phase, sick.reason) == (types_pb2.REPLICA_PHASE_RUNNING,
                                         types_pb2.REPLICA_REASON_UNHEALTHY)
    oom = status(container(exit=Exit(137, oom_killed=True, finished_unix_ms=9_000)))
    assert (oom.phase, oom.reason, oom.exit_code) == (
        types_pb2.REPLICA_PHASE_FAILED, types_pb2.REPLICA_REASON_OOM_KILLED, 137)
    done = status(container(exit=Exit(0, finished_unix_ms=9_000)))
    assert (done.phase, done.reason) == (types_pb2.REPLICA_PHASE_SUCCEEDED,
                                         types_pb2.REPLICA_REASON_COMPLETED)


def test_a_crash_loop_names_the_exit_reason_in_its_message():
    st = status(container("Always", exit=Exit(137, oom_killed=True, finished_unix_ms=9_500),
                          started_ms=9_000))
    assert (st.phase, st.reason) == (types_pb2.REPLICA_PHASE_STARTING,
                                     types_pb2.REPLICA_REASON_CRASH_LOOP_BACK_OFF)
    assert st.message.startswith("OOMKilled: exit code 137; restarting in ")


# -- the CLI prints names --------------------------------------------------------


def replica(phase: int, reason: int = 0, message: str = "") -> types_pb2.Replica:
    r = types_pb2.Replica(workload="web", node="n1")
    r.metadata.name = "web-a"
    r.status.phase, r.status.reason, r.status.message = phase, reason, message
    r.status.exit_code = 137 if reason == types_pb2.REPLICA_REASON_OOM_KILLED else 0
    return r


@pytest.mark.parametrize(("phase", "reason", "shown"), [
    (types_pb2.REPLICA_PHASE_RUNNING, 0, "Running"),
    (types_pb2.REPLICA_PHASE_UNSPECIFIED, 0, "Pending"),
    (types_pb2.REPLICA_PHASE_PENDING, types_pb2.REPLICA_REASON_UNSCHEDULABLE, "Unschedulable"),
    (types_pb2.REPLICA_PHASE_FAILED, types_pb2.REPLICA_REASON_OOM_KILLED, "Failed:OOMKilled"),
    (types_pb2.REPLICA_PHASE_SUCCEEDED, types_pb2.REPLICA_REASON_COMPLETED, "Succeeded"),
    (types_pb2.REPLICA_PHASE_STARTING, types_pb2.REPLICA_REASON_CRASH_LOOP_BACK_OFF,
     "Starting:CrashLoopBackOff"),
    (types_pb2.REPLICA_PHASE_RUNNING, types_pb2.REPLICA_REASON_NODE_NOT_READY,
     "Running:NodeNotReady"),
])
def test_the_status_column(phase, reason, shown):
    assert output.replica_status(replica(phase, reason)) == shown


def test_json_keeps_the_names_and_their_place_in_the_status():
    resp = control_pb2.ReplicaList(items=[
        replica(types_pb2.REPLICA_PHASE_FAILED, types_pb2.REPLICA_REASON_OOM_KILLED, "oom"),
        replica(types_pb2.REPLICA_PHASE_RUNNING)])
    resp.usage.add()
    resp.usage.add()
    items = json.loads(output.documents(resp, "json"))["items"]
    assert list(items[0]["status"].items()) == [
        ("phase", "Failed"), ("reason", "OOMKilled"), ("message", "oom"), ("exitCode", 137)]
    assert items[1]["status"] == {"phase": "Running"}     # an unset reason stays out
    assert "  status:\n    phase: Failed\n    reason: OOMKilled\n" in output.documents(resp, "yaml")

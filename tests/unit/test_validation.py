"""The rules of common/validation.py, each with its field path and message.

These are the checks the scheduler's Apply runs on every request and the
CLI runs after parsing a file (test_spec.py shows them there, with file and
document); here they are fed messages directly, as a raw gRPC client would.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mctl.common import validation
from mctl.common.spec import parse_documents
from mctl.common.validation import (
    CLIENT_LIMITS,
    MAX_APPLY_BYTES,
    MAX_LIST_ITEMS,
    MAX_STRING_BYTES,
    MAX_WORKLOADS_PER_APPLY,
    FieldProblem,
    Limits,
    apply_problem,
    workload_problem,
)
from mctl.v1 import types_pb2


def valid(name: str = "web", namespace: str = "shop") -> types_pb2.Workload:
    """A workload as the CLI sends it: every default filled in."""
    w = types_pb2.Workload()
    w.metadata.name = name
    w.metadata.namespace = namespace
    s = w.spec
    s.replicas = 1
    s.image = "busybox"
    s.resources.cpu_millis = 250
    s.resources.memory_bytes = 64 << 20
    s.resources.pids = 256
    s.restart_policy = "Always"
    s.spread = True
    s.update.max_unavailable = 1
    s.update.max_surge = 1
    return w


def changed(change: Callable[[types_pb2.Workload], object]) -> types_pb2.Workload:
    w = valid()
    change(w)
    return w


def test_a_complete_workload_is_valid():
    assert workload_problem(valid()) is None


@pytest.mark.parametrize("image", [
    "registry.local:5000/team/app:1.2", "localhost/app",
    "reg.local:5000/team/app@sha256:" + "a" * 64,
    "reg.local:5000/team/app:1.2@sha256:" + "0" * 64])
def test_registry_references_and_pinned_ones_are_valid(image):
    assert workload_problem(changed(lambda w: setattr(w.spec, "image", image))) is None


def test_what_the_parser_makes_of_spec_md_is_valid():
    [w] = parse_documents(
        """
apiVersion: mctl/v1
kind: Workload
metadata: {name: web, labels: {app: web, example.com/tier: front}}
spec:
  replicas: 3
  image: registry.local:5000/team/app:1.2
  command: [/bin/httpd, -f, -p, "8080"]
  args: [""]
  env: {GREETING: hello, EMPTY: ""}
  workingDir: /srv
  hostname: www
  ports:
    - {containerPort: 8080, hostPort: 18080}
    - {containerPort: 8080, hostPort: 18081}
    - {containerPort: 8080, hostPort: 18080, protocol: UDP}
  healthCheck: {exec: [/bin/cat, /tmp/healthy]}
  nodeSelector: {disk: ssd}
  update: {maxUnavailable: 0, maxSurge: 2}
  securityContext: {seccompProfile: Unconfined}
""",
        "app.yaml",
    )
    assert workload_problem(w) is None


def _ports(*ports: tuple[int, int, str]) -> Callable[[types_pb2.Workload], object]:
    def change(w: types_pb2.Workload) -> None:
        for container, host, protocol in ports:
            w.spec.ports.add(container_port=container, host_port=host, protocol=protocol)
    return change


def _set_health(probe: str = "health_check", **fields: object
                ) -> Callable[[types_pb2.Workload], object]:
    def change(w: types_pb2.Workload) -> None:
        check = getattr(w.spec, probe)
        check.SetInParent()
        check.period_seconds = 10
        check.failure_threshold = 3
        for key, value in fields.items():
            if key == "exec":
                check.exec.extend(value)
            else:
                setattr(check, key, value)
    return change


def _named_ports(*ports: tuple[int, int, str, str]) -> Callable[[types_pb2.Workload], object]:
    def change(w: types_pb2.Workload) -> None:
        for container, host, protocol, name in ports:
            w.spec.ports.add(container_port=container, host_port=host, protocol=protocol,
                             name=name)
    return change


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        # metadata
        (lambda w: setattr(w.metadata, "name", ""), "metadata.name", "must not be empty"),
        (lambda w: setattr(w.metadata, "name", "Web"), "metadata.name",
         '"Web" is not a DNS label'),
        (lambda w: setattr(w.metadata, "namespace", ""), "metadata.namespace",
         "must not be empty"),
        (lambda w: setattr(w.metadata, "namespace", "a_b"), "metadata.namespace",
         '"a_b" is not a DNS label'),
        (lambda w: w.metadata.labels.update({"a b": "x"}), "metadata.labels",
         'label key "a b" is not valid'),
        (lambda w: w.metadata.labels.update({"x.io/a": "-b"}), 'metadata.labels["x.io/a"]',
         'label value "-b" is not valid'),
        # replicas and image
        (lambda w: setattr(w.spec, "replicas", -1), "spec.replicas",
         "must be at least 0, not -1"),
        (lambda w: setattr(w.spec, "replicas", 1001), "spec.replicas",
         "must be at most 1000, not 1001 (the scheduler's --max-replicas)"),
        (lambda w: setattr(w.spec, "image", ""), "spec.image", "must not be empty"),
        (lambda w: setattr(w.spec, "image", "../../etc"), "spec.image",
         '"../../etc" is not an image reference (lowercase NAME[:TAG]'),
        (lambda w: setattr(w.spec, "image", "bad image"), "spec.image",
         '"bad image" is not an image reference'),
        (lambda w: setattr(w.spec, "image", "Busybox"), "spec.image",
         '"Busybox" is not an image reference'),
        (lambda w: setattr(w.spec, "image", "app@sha256:" + "a" * 64), "spec.image",
         f'"app@sha256:{"a" * 64}" is a digest reference; give NAME[:TAG]'),
        (lambda w: setattr(w.spec, "image", "reg.local:5000/app@sha256:abc"), "spec.image",
         '"reg.local:5000/app@sha256:abc": the digest after @ must be sha256: and 64'),
        # argv
        (lambda w: w.spec.command.append(""), "spec.command[0]",
         "must not be empty: it names the program to run"),
        (lambda w: w.spec.command.extend(["sh", "a\0b"]), "spec.command[1]",
         '"a\\u0000b" contains a NUL character'),
        (lambda w: w.spec.args.extend(["-v", "x" * (MAX_STRING_BYTES + 1)]), "spec.args[1]",
         f"is {MAX_STRING_BYTES + 1} bytes long; at most {MAX_STRING_BYTES}"),
        (lambda w: w.spec.args.extend(["é" * (MAX_STRING_BYTES // 2 + 1)]), "spec.args[0]",
         f"is {MAX_STRING_BYTES + 2} bytes long"),
        (lambda w: w.spec.args.extend(["a"] * (MAX_LIST_ITEMS + 1)), "spec.args",
         f"has {MAX_LIST_ITEMS + 1} entries; at most {MAX_LIST_ITEMS}"),
        # env
        (lambda w: w.spec.env.add(name="1A"), "spec.env[0].name",
         '"1A" is not a valid variable name'),
        (lambda w: w.spec.env.add(name=""), "spec.env[0].name",
         '"" is not a valid variable name'),
        (lambda w: [w.spec.env.add(name=n) for n in ("A", "B", "A")], "spec.env[2].name",
         '"A" is set twice'),
        (lambda w: w.spec.env.add(name="A", value="x\0"), "spec.env[0].value",
         '"x\\u0000" contains a NUL character'),
        (lambda w: [w.spec.env.add(name=f"V{i}") for i in range(MAX_LIST_ITEMS + 1)],
         "spec.env", f"has {MAX_LIST_ITEMS + 1} entries"),
        # paths and names
        (lambda w: setattr(w.spec, "working_dir", "srv"), "spec.workingDir",
         '"srv" is not an absolute path'),
        (lambda w: setattr(w.spec, "working_dir", "/" + "d" * 5000), "spec.workingDir",
         "is 5001 bytes long; at most 4096"),
        (lambda w: setattr(w.spec, "hostname", "Web"), "spec.hostname",
         '"Web" is not a DNS label'),
        # resources
        (lambda w: setattr(w.spec.resources, "cpu_millis", 0), "spec.resources.cpu",
         "must be more than 0, not 0m"),
        (lambda w: setattr(w.spec.resources, "cpu_millis", -5), "spec.resources.cpu",
         "must be more than 0, not -5m"),
        (lambda w: setattr(w.spec.resources, "memory_bytes", 0), "spec.resources.memory",
         "must be more than 0, not 0"),
        (lambda w: setattr(w.spec.resources, "pids", 0), "spec.resources.pids",
         "must be at least 1, not 0"),
        # ports
        (_ports((0, 0, "TCP")), "spec.ports[0].containerPort", "must be at least 1, not 0"),
        (_ports((65536, 0, "TCP")), "spec.ports[0].containerPort",
         "must be at most 65535, not 65536"),
        (_ports((80, -1, "TCP")), "spec.ports[0].hostPort", "must be at least 0, not -1"),
        (_ports((80, 70000, "TCP")), "spec.ports[0].hostPort",
         "must be at most 65535, not 70000"),
        (_ports((80, 0, "tcp")), "spec.ports[0].protocol",
         'must be one of TCP, UDP, not "tcp"'),
        (_ports((80, 0, "")), "spec.ports[0].protocol", 'must be one of TCP, UDP, not ""'),
        (_ports((80, 8080, "TCP"), (81, 8080, "TCP")), "spec.ports[1].hostPort",
         "8080/TCP is already published by spec.ports[0]"),
        (_ports((53, 0, "UDP"), (80, 0, "TCP"), (53, 0, "UDP")), "spec.ports[2].containerPort",
         "53/UDP is already declared by spec.ports[0]"),
        # port names: DNS labels, each naming one port
        (_named_ports((80, 0, "TCP", "HTTP")), "spec.ports[0].name",
         '"HTTP" is not a DNS label'),
        (_named_ports((80, 0, "TCP", "h" * 64)), "spec.ports[0].name",
         f'"{"h" * 64}" is longer than 63 characters'),
        (_named_ports((80, 0, "TCP", "http"), (81, 0, "TCP", "http")), "spec.ports[1].name",
         '"http" already names spec.ports[0]'),
        (_named_ports((80, 8080, "TCP", "web"), (80, 8081, "TCP", "www")), "spec.ports[1].name",
         '80/TCP is already named "web" by spec.ports[0]'),
        # restart policy
        (lambda w: setattr(w.spec, "restart_policy", "Sometimes"), "spec.restartPolicy",
         'must be one of Always, OnFailure, Never, not "Sometimes"'),
        (lambda w: setattr(w.spec, "restart_policy", ""), "spec.restartPolicy",
         'must be one of Always, OnFailure, Never, not ""'),
        # health check
        (_set_health(), "spec.healthCheck", "needs exactly one of exec or tcpPort, not neither"),
        (_set_health(exec=["true"], tcp_port=80), "spec.healthCheck",
         "needs exactly one of exec or tcpPort, not both"),
        (_set_health(exec=["", "x"]), "spec.healthCheck.exec[0]", "must not be empty"),
        (_set_health(tcp_port=-1), "spec.healthCheck.tcpPort", "must be at least 1, not -1"),
        (_set_health(tcp_port=65536), "spec.healthCheck.tcpPort",
         "must be at most 65535, not 65536"),
        (_set_health(tcp_port=80, period_seconds=0), "spec.healthCheck.periodSeconds",
         "must be at least 1, not 0"),
        (_set_health(tcp_port=80, failure_threshold=-3), "spec.healthCheck.failureThreshold",
         "must be at least 1, not -3"),
        # readiness: the same rules, at its own field
        (_set_health("readiness"), "spec.readiness",
         "needs exactly one of exec or tcpPort, not neither"),
        (_set_health("readiness", exec=["true"], tcp_port=80), "spec.readiness",
         "needs exactly one of exec or tcpPort, not both"),
        (_set_health("readiness", exec=[""]), "spec.readiness.exec[0]", "must not be empty"),
        (_set_health("readiness", tcp_port=65536), "spec.readiness.tcpPort",
         "must be at most 65535, not 65536"),
        (_set_health("readiness", tcp_port=80, period_seconds=0), "spec.readiness.periodSeconds",
         "must be at least 1, not 0"),
        (_set_health("readiness", tcp_port=80, failure_threshold=0),
         "spec.readiness.failureThreshold", "must be at least 1, not 0"),
        # the status is the scheduler's (the virtual IP)
        (lambda w: setattr(w.status, "virtual_ip", "10.96.0.1"), "status",
         "is written by the scheduler (the virtual IP); leave it out"),
        (lambda w: w.status.SetInParent(), "status", "is written by the scheduler"),
        # placement, update, security
        (lambda w: w.spec.node_selector.update({"disk type": "ssd"}), "spec.nodeSelector",
         'label key "disk type" is not valid'),
        (lambda w: w.spec.node_selector.update({"disk": "a b"}), "spec.nodeSelector.disk",
         'label value "a b" is not valid'),
        (lambda w: setattr(w.spec.update, "max_unavailable", -1), "spec.update.maxUnavailable",
         "must be at least 0, not -1"),
        (lambda w: setattr(w.spec.update, "max_surge", -1), "spec.update.maxSurge",
         "must be at least 0, not -1"),
        (lambda w: (setattr(w.spec.update, "max_unavailable", 0),
                    setattr(w.spec.update, "max_surge", 0)),
         "spec.update", "maxUnavailable and maxSurge must not both be 0"),
        (lambda w: setattr(w.spec.security_context, "seccomp_profile", "Localhost"),
         "spec.securityContext.seccompProfile",
         'must be RuntimeDefault (stored as "") or Unconfined, not "Localhost"'),
        # Stored as "": a second spelling would give the same spec a second hash.
        (lambda w: setattr(w.spec.security_context, "seccomp_profile", "RuntimeDefault"),
         "spec.securityContext.seccompProfile", "must be RuntimeDefault (stored as \"\")"),
    ],
)
def test_each_rule_names_its_field(change, field, problem):
    found = workload_problem(changed(change))
    assert found is not None
    assert found.field == field
    assert found.problem.startswith(problem)
    assert "\n" not in str(found)


@pytest.mark.parametrize(
    "change",
    [
        lambda w: w.spec.args.append(""),                 # an empty argument is an argument
        lambda w: w.spec.command.extend(["sh", "-c", ""]),
        _ports((80, 8080, "TCP"), (80, 8081, "TCP")),     # one port published twice
        _ports((53, 5353, "TCP"), (53, 5353, "UDP")),     # one host port, two protocols
        _ports((80, 0, "TCP"), (80, 0, "UDP")),
        _set_health(tcp_port=65535),
        _set_health("readiness", exec=["cat", "/tmp/ready"]),
        _named_ports((80, 0, "TCP", "http"), (53, 0, "UDP", "dns"), (53, 0, "TCP", "dns-tcp")),
        # One port published twice: named once, or by both entries alike.
        _named_ports((80, 8080, "TCP", "web"), (80, 8081, "TCP", "")),
        lambda w: setattr(w.spec, "replicas", 0),          # scale to zero
        lambda w: setattr(w.spec, "replicas", 1000),
        lambda w: setattr(w.spec.update, "max_unavailable", 0),
        lambda w: setattr(w.spec.security_context, "seccomp_profile", "Unconfined"),
        lambda w: w.spec.env.add(name="_A1", value="x" * MAX_STRING_BYTES),
        lambda w: w.spec.args.extend(["a"] * MAX_LIST_ITEMS),
        # Written by the server: whatever a client sends is overwritten, not judged.
        lambda w: (setattr(w.metadata, "uid", "anything"),
                   setattr(w.metadata, "generation", -4)),
    ],
)
def test_what_is_fine(change):
    assert workload_problem(changed(change)) is None


def test_host_ports_below_the_schedulers_minimum_are_refused_at_their_field():
    ssh = changed(_ports((8080, 22, "TCP")))
    assert workload_problem(ssh) == FieldProblem(
        "spec.ports[0].hostPort",
        "must be at least 1024, not 22 (the scheduler's --host-port-min)")
    low = changed(_ports((8080, 18080, "TCP"), (53, 1023, "UDP")))
    assert workload_problem(low) == FieldProblem(
        "spec.ports[1].hostPort",
        "must be at least 1024, not 1023 (the scheduler's --host-port-min)")
    assert workload_problem(changed(_ports((8080, 1024, "TCP")))) is None
    # A cluster that wants them lowers the flag; the CLI leaves it to the server.
    assert workload_problem(ssh, Limits(host_port_min=22)) is None
    assert workload_problem(ssh, validation.CLIENT_LIMITS) is None
    # 0 is "not published", never "too low".
    assert workload_problem(changed(_ports((8080, 0, "TCP")))) is None


def _sized(name: str, replicas: int) -> types_pb2.Workload:
    w = types_pb2.Workload()
    w.metadata.namespace, w.metadata.name = "shop", name
    w.spec.replicas = replicas
    return w


def test_the_cluster_replica_cap_counts_every_workload_after_the_apply():
    stored = {("shop", "a"): 600, ("shop", "b"): 300}
    assert validation.cluster_replicas_problem(stored, [_sized("c", 100)], 1000) is None
    assert validation.cluster_replicas_problem(stored, [_sized("c", 101)], 1000) == (
        "the cluster may have at most 1000 replicas (the scheduler's --max-cluster-replicas);"
        " this apply would make it 1001")
    # Replacing a workload counts its new size, not both.
    assert validation.cluster_replicas_problem(stored, [_sized("a", 700)], 1000) is None
    assert validation.cluster_replicas_problem(stored, [_sized("a", 701)], 1000) is not None


def test_a_cluster_over_a_lowered_cap_can_still_shrink():
    stored = {("shop", "a"): 800, ("shop", "b"): 800}
    assert validation.cluster_replicas_problem(stored, [_sized("a", 700)], 1000) is None
    assert validation.cluster_replicas_problem(stored, [_sized("a", 801)], 1000) is not None


def test_the_replica_cap_is_the_schedulers_to_set():
    w = changed(lambda w: setattr(w.spec, "replicas", 5000))
    assert workload_problem(w) == FieldProblem(
        "spec.replicas", "must be at most 1000, not 5000 (the scheduler's --max-replicas)")
    assert workload_problem(w, Limits(max_replicas=10_000)) is None
    assert workload_problem(w, CLIENT_LIMITS) is None       # the CLI cannot know it
    small = Limits(max_replicas=3)
    assert workload_problem(changed(lambda w: setattr(w.spec, "replicas", 3)), small) is None
    assert workload_problem(changed(lambda w: setattr(w.spec, "replicas", 4)), small) == \
        FieldProblem("spec.replicas",
                     "must be at most 3, not 4 (the scheduler's --max-replicas)")
    # Negative counts are wrong whatever the cap.
    assert workload_problem(changed(lambda w: setattr(w.spec, "replicas", -1)),
                            CLIENT_LIMITS) == FieldProblem("spec.replicas",
                                                           "must be at least 0, not -1")


def test_a_workload_too_large_as_a_whole():
    # Each value within its own bound, together over the workload's.
    w = changed(lambda w: [w.spec.env.add(name=f"V{i}", value="x" * MAX_STRING_BYTES)
                           for i in range(5)])
    found = workload_problem(w)
    assert found is not None and found.field == ""
    assert found.problem == (f"is {w.ByteSize()} bytes encoded; a workload may have at most"
                             f" {validation.MAX_WORKLOAD_BYTES}")


def test_a_long_bad_value_is_cut_in_the_message():
    found = workload_problem(changed(lambda w: setattr(w.spec, "image", "B" * 100_000)))
    assert found is not None and len(str(found)) < 300


# ---------------------------------------------------------------------------
# A whole apply


def test_an_apply_of_valid_workloads_is_fine():
    assert apply_problem([valid("a"), valid("b"), valid("a", namespace="other")]) is None
    assert apply_problem([]) is None


def test_a_problem_names_the_workload_and_the_field():
    bad = changed(lambda w: setattr(w.spec, "replicas", -1))
    assert apply_problem([valid("a"), bad]) == \
        "workload shop/web: spec.replicas: must be at least 0, not -1"


def test_a_workload_without_a_usable_name_is_named_by_its_place():
    bad = valid("Not A Name")
    assert apply_problem([valid("a"), bad]) == \
        'workloads[1]: metadata.name: "Not A Name" is not a DNS label: use lowercase' \
        ' letters, digits and "-", starting and ending with a letter or digit'


def test_the_same_workload_twice_in_one_apply():
    assert apply_problem([valid("a"), valid("b"), valid("a")]) == \
        "workload shop/a: listed twice in one apply (workloads[0] and workloads[2])"


def test_too_many_workloads_in_one_apply():
    many = [valid(f"w{i}") for i in range(MAX_WORKLOADS_PER_APPLY)]
    assert apply_problem(many) is None
    many.append(valid("one-more"))
    assert apply_problem(many) == (f"at most {MAX_WORKLOADS_PER_APPLY} workloads in one apply,"
                                   f" not {MAX_WORKLOADS_PER_APPLY + 1}: apply them in parts")


def test_too_many_bytes_in_one_apply():
    def big(name: str) -> types_pb2.Workload:
        w = valid(name)
        for i in range(3):
            w.spec.env.add(name=f"V{i}", value="x" * MAX_STRING_BYTES)
        return w
    workloads = [big(f"w{i}") for i in range(MAX_APPLY_BYTES // big("x").ByteSize() + 1)]
    assert len(workloads) < MAX_WORKLOADS_PER_APPLY
    assert all(workload_problem(w) is None for w in workloads)
    size = sum(w.ByteSize() for w in workloads)
    assert apply_problem(workloads) == (f"at most {MAX_APPLY_BYTES} bytes of workloads in one"
                                        f" apply, not {size}: apply them in parts")
    assert apply_problem(workloads[:-1]) is None


def test_limits_come_before_the_workloads_are_read():
    # A request over the count is refused as such, whatever it holds.
    bad = [valid("Bad")] * (MAX_WORKLOADS_PER_APPLY + 1)
    problem = apply_problem(bad)
    assert problem is not None and problem.startswith("at most")

import io
import json
import textwrap

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_budget import examples

from mctl.common.spec import (
    SpecError,
    load_path,
    parse_documents,
    spec_hash,
    workload_to_dict,
)
from mctl.v1 import types_pb2

MINIMAL = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: web
spec:
  image: busybox
"""

# The example from SPEC.md, "The workload file".
FULL = """\
apiVersion: mctl/v1
kind: Workload
metadata:
  name: web
  namespace: shop
  labels: {app: web, example.com/tier: front}
spec:
  replicas: 3
  image: busybox
  command: ["/bin/httpd", "-f", "-p", "8080"]
  args: ["-v"]
  env: {GREETING: hello, EMPTY: ""}
  workingDir: /srv
  hostname: www
  resources:
    cpu: 500m
    memory: 128Mi
    pids: 128
  ports:
    - containerPort: 8080
      hostPort: 18080
      protocol: TCP
    - containerPort: 53
      protocol: UDP
  restartPolicy: OnFailure
  healthCheck:
    exec: ["/bin/cat", "/tmp/healthy"]
    periodSeconds: 5
    failureThreshold: 2
  nodeSelector: {disk: ssd}
  spread: false
  update:
    maxUnavailable: 0
    maxSurge: 2
  securityContext:
    userNamespace: true
    readOnlyRootfs: true
"""


def parse_one(text: str) -> types_pb2.Workload:
    [workload] = parse_documents(text, "app.yaml")
    return workload


def spec_with(extra: str) -> str:
    """MINIMAL with `extra` (YAML at spec indentation, dedented) added to the spec."""
    return MINIMAL + textwrap.indent(textwrap.dedent(extra), "  ")


def error_for(text: str, source: str = "app.yaml") -> SpecError:
    with pytest.raises(SpecError) as e:
        parse_documents(text, source)
    return e.value


def meta_with(extra: str) -> str:
    """MINIMAL with `extra` (one line at metadata indentation) added to the metadata."""
    return MINIMAL.replace("name: web", "name: web\n  " + extra)


def problem_at(extra: str) -> tuple[str | None, str]:
    e = error_for(spec_with(extra))
    assert e.source == "app.yaml"
    assert e.document == 1
    return e.field, e.problem


# ---------------------------------------------------------------------------
# Defaults and a full workload


def test_minimal_workload_gets_every_default():
    w = parse_one(MINIMAL)
    assert w.metadata.name == "web"
    assert w.metadata.namespace == "default"
    assert dict(w.metadata.labels) == {}
    s = w.spec
    assert s.replicas == 1
    assert s.image == "busybox"
    assert list(s.command) == [] and list(s.args) == [] and list(s.env) == []
    assert s.working_dir == "" and s.hostname == ""
    assert (s.resources.cpu_millis, s.resources.memory_bytes, s.resources.pids) == (
        250,
        64 * 1024 * 1024,
        256,
    )
    assert list(s.ports) == []
    assert s.restart_policy == "Always"
    assert not s.HasField("health_check")
    assert dict(s.node_selector) == {}
    assert s.spread is True
    assert (s.update.max_unavailable, s.update.max_surge) == (1, 1)
    assert s.security_context.user_namespace is False
    assert s.security_context.read_only_rootfs is False


def test_full_workload():
    w = parse_one(FULL)
    assert w.metadata.namespace == "shop"
    assert dict(w.metadata.labels) == {"app": "web", "example.com/tier": "front"}
    s = w.spec
    assert s.replicas == 3
    assert list(s.command) == ["/bin/httpd", "-f", "-p", "8080"]
    assert list(s.args) == ["-v"]
    assert [(e.name, e.value) for e in s.env] == [("GREETING", "hello"), ("EMPTY", "")]
    assert s.working_dir == "/srv"
    assert s.hostname == "www"
    assert (s.resources.cpu_millis, s.resources.memory_bytes, s.resources.pids) == (
        500,
        128 * 1024 * 1024,
        128,
    )
    assert [(p.container_port, p.host_port, p.protocol) for p in s.ports] == [
        (8080, 18080, "TCP"),
        (53, 0, "UDP"),
    ]
    assert s.restart_policy == "OnFailure"
    assert list(s.health_check.exec) == ["/bin/cat", "/tmp/healthy"]
    assert (s.health_check.period_seconds, s.health_check.failure_threshold) == (5, 2)
    assert dict(s.node_selector) == {"disk": "ssd"}
    assert s.spread is False
    assert (s.update.max_unavailable, s.update.max_surge) == (0, 2)
    assert s.security_context.user_namespace is True
    assert s.security_context.read_only_rootfs is True


def test_partial_resources_keep_other_defaults():
    s = parse_one(spec_with("resources: {memory: 1Gi}")).spec
    assert (s.resources.cpu_millis, s.resources.memory_bytes, s.resources.pids) == (
        250,
        1024**3,
        256,
    )


@pytest.mark.parametrize(("cpu", "millis"), [("2", 2000), ("0.5", 500), ('"0.5"', 500), ("1m", 1)])
def test_cpu_spellings(cpu, millis):
    assert parse_one(spec_with(f"resources: {{cpu: {cpu}}}")).spec.resources.cpu_millis == millis


def test_null_means_omitted():
    s = parse_one(spec_with("replicas:\nargs:\nhealthCheck:\nresources:\n  cpu:\n")).spec
    assert s.replicas == 1
    assert list(s.args) == []
    assert not s.HasField("health_check")
    assert s.resources.cpu_millis == 250


def test_zero_replicas_is_allowed():
    assert parse_one(spec_with("replicas: 0")).spec.replicas == 0


def test_env_list_form():
    s = parse_one(spec_with("env:\n- {name: A, value: x}\n- {name: _B}\n")).spec
    assert [(e.name, e.value) for e in s.env] == [("A", "x"), ("_B", "")]


def test_health_check_tcp_defaults():
    check = parse_one(spec_with("healthCheck: {tcpPort: 8080}")).spec.health_check
    assert (check.tcp_port, list(check.exec), check.period_seconds, check.failure_threshold) == (
        8080,
        [],
        10,
        3,
    )


def test_readiness_and_port_names():
    s = parse_one(spec_with("ports: [{name: http, containerPort: 8080}, {containerPort: 9090}]\n"
                            "readiness: {tcpPort: 8080}\n")).spec
    assert [(p.name, p.container_port) for p in s.ports] == [("http", 8080), ("", 9090)]
    assert (s.readiness.tcp_port, s.readiness.period_seconds,
            s.readiness.failure_threshold) == (8080, 10, 3)
    assert not parse_one(MINIMAL).spec.HasField("readiness")
    d = workload_to_dict(parse_one(spec_with(
        "ports: [{name: http, containerPort: 8080}]\nreadiness: {exec: [cat, /ready]}\n")))
    assert d["spec"]["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert d["spec"]["readiness"] == {"exec": ["cat", "/ready"], "periodSeconds": 10,
                                      "failureThreshold": 3}
    # Old workloads (no names, no readiness) keep their spec hash: no rollout on upgrade.
    assert spec_hash(parse_one(MINIMAL).spec) == spec_hash(parse_one(
        spec_with("readiness:\n")).spec)


def test_same_host_port_on_different_protocols_is_fine():
    text = spec_with(
        """\
        ports:
        - {containerPort: 53, hostPort: 53, protocol: TCP}
        - {containerPort: 53, hostPort: 53, protocol: UDP}
        """
    )
    assert len(parse_one(text).spec.ports) == 2


def test_default_namespace_can_be_chosen_by_the_caller():
    [w] = parse_documents(MINIMAL, "app.yaml", default_namespace="team")
    assert w.metadata.namespace == "team"
    [w] = parse_documents(FULL, "app.yaml", default_namespace="team")
    assert w.metadata.namespace == "shop"


def test_yaml_merge_keys_work():
    text = spec_with(
        "command: &sh [/bin/sh, -c]\n"
        "healthCheck: {exec: *sh}\n"
        "securityContext: {<<: {readOnlyRootfs: true}, userNamespace: true}\n"
    )
    s = parse_one(text).spec
    assert list(s.health_check.exec) == ["/bin/sh", "-c"]
    assert s.security_context.read_only_rootfs is True


# ---------------------------------------------------------------------------
# The message format


def test_error_message_format_from_spec_md():
    text = MINIMAL + "---\n" + spec_with("resources: {memory: 64Mb}")
    e = error_for(text)
    assert str(e) == 'app.yaml: document 2: spec.resources.memory: "64Mb" is not a quantity'
    assert (e.source, e.document, e.field, e.problem) == (
        "app.yaml",
        2,
        "spec.resources.memory",
        '"64Mb" is not a quantity',
    )


def test_error_message_omits_missing_parts():
    assert str(SpecError("no workloads found", source="x.yaml")) == "x.yaml: no workloads found"
    assert str(SpecError("p", source="x", document=3)) == "x: document 3: p"
    assert str(SpecError("p", field="spec.image")) == "spec.image: p"
    assert str(SpecError("p")) == "p"


def test_document_that_is_not_a_mapping():
    e = error_for(MINIMAL + "---\n- a\n- b\n")
    assert str(e) == "app.yaml: document 2: must be a mapping, not a list"
    assert e.field is None


def test_empty_documents_are_skipped_but_counted():
    # Documents: 1 empty, 2 MINIMAL, 3 empty, 4 the bad one.
    text = "---\n---\n" + MINIMAL + "---\n---\n" + spec_with("replicas: -1")
    e = error_for(text)
    assert e.document == 4
    assert str(e) == "app.yaml: document 4: spec.replicas: must be at least 0, not -1"


def test_empty_text_has_no_workloads():
    assert parse_documents("", "app.yaml") == []
    assert parse_documents("---\n---\n", "app.yaml") == []
    assert parse_documents("# only a comment\n", "app.yaml") == []


# ---------------------------------------------------------------------------
# Bad documents, field by field


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        (MINIMAL.replace("apiVersion: mctl/v1\n", ""), "apiVersion", "required"),
        (MINIMAL.replace("mctl/v1", "v1"), "apiVersion", 'must be "mctl/v1", not "v1"'),
        (MINIMAL.replace("mctl/v1", "1"), "apiVersion", 'must be "mctl/v1", not 1'),
        (MINIMAL.replace("kind: Workload\n", ""), "kind", "required"),
        (MINIMAL.replace("Workload", "Deployment"), "kind",
         'must be one of Workload, Config, Secret, not "Deployment"'),
        # status is the scheduler's: `get -o yaml` shows it and apply drops it,
        # but only what it can hold.
        (MINIMAL + "status: {phase: Running}\n", "status.phase", "unknown field"),
        (MINIMAL + "status: {virtualIP: 7}\n", "status.virtualIP", "must be a string"),
        (MINIMAL.replace("spec:\n  image: busybox\n", ""), "spec", "required"),
        (
            MINIMAL.replace("  image: busybox\n", "") + "  []\n",
            "spec",
            "must be a mapping, not a list",
        ),
        (MINIMAL.replace("metadata:\n  name: web\n", ""), "metadata", "required"),
        (MINIMAL.replace("  name: web\n", "  namespace: x\n"), "metadata.name", "required"),
        (MINIMAL.replace("name: web", "name: Web"), "metadata.name", '"Web" is not a DNS label'),
        (
            MINIMAL.replace("name: web", "name: web_1"),
            "metadata.name",
            '"web_1" is not a DNS label',
        ),
        (MINIMAL.replace("name: web", 'name: ""'), "metadata.name", "must not be empty"),
        (
            MINIMAL.replace("name: web", "name: " + "x" * 64),
            "metadata.name",
            f'"{"x" * 64}" is longer than 63 characters',
        ),
        (MINIMAL.replace("image: busybox", 'image: ""'), "spec.image", "must not be empty"),
        (
            MINIMAL.replace("image: busybox", "image: 5"),
            "spec.image",
            "must be a string, not 5 (quote it in YAML)",
        ),
        (
            MINIMAL.replace("image: busybox", 'image: "bad image"'),
            "spec.image",
            '"bad image" is not an image reference',
        ),
        (
            MINIMAL.replace("image: busybox", "image: ../../etc"),
            "spec.image",
            '"../../etc" is not an image reference',
        ),
        (
            MINIMAL.replace("image: busybox", "image: [a]"),
            "spec.image",
            "must be a string, not a list",
        ),
        (MINIMAL.replace("name: web", "name: 42"), "metadata.name", "must be a string, not 42"),
        (meta_with("namespace: A"), "metadata.namespace", '"A" is not a DNS label'),
        (meta_with("nmespace: a"), "metadata.nmespace", "unknown field"),
        (meta_with("labels: [a]"), "metadata.labels", "must be a mapping of strings, not a list"),
        (
            meta_with("labels: {app: 1}"),
            "metadata.labels.app",
            "must be a string, not 1 (quote it in YAML)",
        ),
        (
            meta_with("labels: {app: yes}"),
            "metadata.labels.app",
            "must be a string, not true (quote it in YAML)",
        ),
        (
            meta_with("labels: {1: a}"),
            "metadata.labels",
            "key 1 must be a string (quote it in YAML)",
        ),
        (meta_with("labels: {a b: x}"), "metadata.labels", 'label key "a b" is not valid'),
        (
            meta_with("labels: {x.io/a: -b}"),
            'metadata.labels["x.io/a"]',
            'label value "-b" is not valid',
        ),
        (meta_with("generation: x"), "metadata.generation", 'must be an integer, not "x"'),
        (meta_with("uid: 7"), "metadata.uid", "must be a string, not 7"),
        (
            meta_with("deletionRequested: 1"),
            "metadata.deletionRequested",
            "must be true or false, not 1",
        ),
    ],
)
def test_bad_top_level_and_metadata(text, field, problem):
    e = error_for(text)
    assert e.field == field
    assert e.problem.startswith(problem)


@pytest.mark.parametrize(
    ("extra", "field", "problem"),
    [
        ("replica: 3", "spec.replica", "unknown field"),
        ("replicas: -1", "spec.replicas", "must be at least 0, not -1"),
        ('replicas: "3"', "spec.replicas", 'must be an integer, not "3"'),
        ("replicas: 3.0", "spec.replicas", "must be an integer, not 3.0"),
        ("replicas: true", "spec.replicas", "must be an integer, not true"),
        ("replicas: 2147483648", "spec.replicas", "must be at most 2147483647, not 2147483648"),
        ("replicas: [1]", "spec.replicas", "must be an integer, not a list"),
        ("command: /bin/sh", "spec.command", 'must be a list of strings, not "/bin/sh"'),
        ("command: [sh, 1]", "spec.command[1]", "must be a string, not 1 (quote it in YAML)"),
        ("args: {a: b}", "spec.args", "must be a list of strings, not a mapping"),
        ('args: ["a\\0b"]', "spec.args[0]", '"a\\u0000b" contains a NUL character'),
        ("env: {A: 1}", "spec.env.A", "must be a string, not 1 (quote it in YAML)"),
        ("env: {A: 1.5}", "spec.env.A", "must be a string, not 1.5 (quote it in YAML)"),
        ("env: {A: no}", "spec.env.A", "must be a string, not false (quote it in YAML)"),
        (
            "env: {A: 2024-01-01}",
            "spec.env.A",
            "must be a string, not a YAML date (quote it in YAML)",
        ),
        ("env: {A: }", "spec.env.A", "must be a string, not null"),
        ("env: {A: [x]}", "spec.env.A", "must be a string, not a list"),
        ("env: {1A: x}", "spec.env", '"1A" is not a valid variable name'),
        ("env: {A-B: x}", "spec.env", '"A-B" is not a valid variable name'),
        ("env: A=b", "spec.env", 'must be a mapping or a list, not "A=b"'),
        ("env: [{value: x}]", "spec.env[0].name", "required"),
        ("env: [{name: A, valu: x}]", "spec.env[0].valu", "unknown field"),
        ("env: [{name: 'A B'}]", "spec.env[0].name", '"A B" is not a valid variable name'),
        ("env: [{name: A, value: 3}]", "spec.env[0].value", "must be a string, not 3"),
        ("env: [{name: A}, {name: A}]", "spec.env[1].name", '"A" is set twice'),
        ("env: [A]", "spec.env[0]", 'must be a mapping, not "A"'),
        ("workingDir: srv", "spec.workingDir", '"srv" is not an absolute path'),
        ("workingDir: 1", "spec.workingDir", "must be a string, not 1"),
        ("hostname: Web", "spec.hostname", '"Web" is not a DNS label'),
        ("resources: 1", "spec.resources", "must be a mapping, not 1"),
        ("resources: {gpu: 1}", "spec.resources.gpu", "unknown field"),
        ("resources: {memory: 64Mb}", "spec.resources.memory", '"64Mb" is not a quantity'),
        ("resources: {memory: -1}", "spec.resources.memory", "-1 must not be negative"),
        ("resources: {memory: 0}", "spec.resources.memory", "must be more than 0, not 0"),
        ("resources: {memory: true}", "spec.resources.memory", "true is not a quantity"),
        ("resources: {memory: 1.5}", "spec.resources.memory", "1.5 is not a whole number of bytes"),
        ("resources: {cpu: two}", "spec.resources.cpu", '"two" is not a quantity'),
        ("resources: {cpu: 0.0001}", "spec.resources.cpu", "0.0001 is more precise than 1m"),
        ('resources: {cpu: "0m"}', "spec.resources.cpu", "must be more than 0, not 0m"),
        ("resources: {pids: 0}", "spec.resources.pids", "must be at least 1, not 0"),
        ("resources: {pids: 1k}", "spec.resources.pids", 'must be an integer, not "1k"'),
        ("resources: {pids: true}", "spec.resources.pids", "must be an integer, not true"),
        ("ports: 80", "spec.ports", "must be a list, not 80"),
        ("ports: [80]", "spec.ports[0]", "must be a mapping, not 80"),
        ("ports: [{hostPort: 80}]", "spec.ports[0].containerPort", "required"),
        ("ports: [{containerPort: 0}]", "spec.ports[0].containerPort", "must be at least 1, not 0"),
        (
            "ports: [{containerPort: 65536}]",
            "spec.ports[0].containerPort",
            "must be at most 65535, not 65536",
        ),
        (
            'ports: [{containerPort: "80"}]',
            "spec.ports[0].containerPort",
            'must be an integer, not "80"',
        ),
        (
            "ports: [{containerPort: 80, hostPort: -1}]",
            "spec.ports[0].hostPort",
            "must be at least 0, not -1",
        ),
        (
            "ports: [{containerPort: 80, hostPort: 70000}]",
            "spec.ports[0].hostPort",
            "must be at most 65535, not 70000",
        ),
        (
            "ports: [{containerPort: 80, protocol: tcp}]",
            "spec.ports[0].protocol",
            'must be one of TCP, UDP, not "tcp"',
        ),
        ("ports: [{containerPort: 80, proto: TCP}]", "spec.ports[0].proto", "unknown field"),
        ("ports: [{containerPort: 80, name: 8}]", "spec.ports[0].name", "must be a string, not 8"),
        (
            "ports: [{containerPort: 80, name: http}, {containerPort: 81, name: http}]",
            "spec.ports[1].name",
            '"http" already names spec.ports[0]',
        ),
        ("ports: [{containerPort: 80, name: Web}]", "spec.ports[0].name", '"Web" is not a DNS'),
        (
            "readiness: {periodSeconds: 5}",
            "spec.readiness",
            "needs exactly one of exec or tcpPort, not neither",
        ),
        ("readiness: {exec: []}", "spec.readiness.exec", "must not be empty"),
        ("readiness: {tcpPort: 0}", "spec.readiness.tcpPort", "must be at least 1, not 0"),
        (
            "readiness: {tcpPort: 80, failureThreshold: 0}",
            "spec.readiness.failureThreshold",
            "must be at least 1, not 0",
        ),
        ("readiness: {tcpPort: 80, initialDelay: 1}", "spec.readiness.initialDelay",
         "unknown field"),
        (
            "ports: [{containerPort: 80, hostPort: 8080}, {containerPort: 81, hostPort: 8080}]",
            "spec.ports[1].hostPort",
            "8080/TCP is already published by spec.ports[0]",
        ),
        (
            "restartPolicy: Sometimes",
            "spec.restartPolicy",
            'must be one of Always, OnFailure, Never, not "Sometimes"',
        ),
        ("restartPolicy: always", "spec.restartPolicy", "must be one of Always, OnFailure, Never"),
        (
            "healthCheck: {periodSeconds: 5}",
            "spec.healthCheck",
            "needs exactly one of exec or tcpPort, not neither",
        ),
        (
            "healthCheck: {exec: [true], tcpPort: 1}",
            "spec.healthCheck",
            "needs exactly one of exec or tcpPort, not both",
        ),
        ("healthCheck: {exec: []}", "spec.healthCheck.exec", "must not be empty"),
        (
            "healthCheck: {exec: cat}",
            "spec.healthCheck.exec",
            'must be a list of strings, not "cat"',
        ),
        ("healthCheck: {exec: [cat, 1]}", "spec.healthCheck.exec[1]", "must be a string, not 1"),
        ("healthCheck: {tcpPort: 0}", "spec.healthCheck.tcpPort", "must be at least 1, not 0"),
        (
            "healthCheck: {tcpPort: 80, periodSeconds: 0}",
            "spec.healthCheck.periodSeconds",
            "must be at least 1, not 0",
        ),
        (
            "healthCheck: {tcpPort: 80, failureThreshold: 0}",
            "spec.healthCheck.failureThreshold",
            "must be at least 1, not 0",
        ),
        (
            "healthCheck: {tcpPort: 80, timeoutSeconds: 1}",
            "spec.healthCheck.timeoutSeconds",
            "unknown field",
        ),
        ("healthCheck: yes", "spec.healthCheck", "must be a mapping, not true"),
        ("nodeSelector: {disk: 1}", "spec.nodeSelector.disk", "must be a string, not 1"),
        (
            "nodeSelector: {disk type: ssd}",
            "spec.nodeSelector",
            'label key "disk type" is not valid',
        ),
        ("nodeSelector: [disk]", "spec.nodeSelector", "must be a mapping of strings, not a list"),
        ('spread: "yes"', "spec.spread", 'must be true or false, not "yes"'),
        ("spread: 1", "spec.spread", "must be true or false, not 1"),
        (
            "update: {maxUnavailable: 0, maxSurge: 0}",
            "spec.update",
            "maxUnavailable and maxSurge must not both be 0",
        ),
        (
            "update: {maxUnavailable: -1}",
            "spec.update.maxUnavailable",
            "must be at least 0, not -1",
        ),
        ('update: {maxSurge: "25%"}', "spec.update.maxSurge", 'must be an integer, not "25%"'),
        ("update: {strategy: Recreate}", "spec.update.strategy", "unknown field"),
        ("securityContext: {privileged: true}", "spec.securityContext.privileged", "unknown field"),
        (
            "securityContext: {userNamespace: 1}",
            "spec.securityContext.userNamespace",
            "must be true or false, not 1",
        ),
        (
            "securityContext: {readOnlyRootfs: null, userNamespace: x}",
            "spec.securityContext.userNamespace",
            'must be true or false, not "x"',
        ),
        ('"foo bar": 1', 'spec["foo bar"]', "unknown field"),
        # Checked by common/validation.py (as the server checks them), in the file's terms.
        ('command: [""]', "spec.command[0]", "must not be empty: it names the program to run"),
        ('env: {A: "a\\0b"}', "spec.env.A", '"a\\u0000b" contains a NUL character'),
        ('env: {"x.y": "1"}', "spec.env", '"x.y" is not a valid variable name'),
        (
            "ports: [{containerPort: 53, protocol: UDP}, {containerPort: 53, protocol: UDP}]",
            "spec.ports[1].containerPort",
            "53/UDP is already declared by spec.ports[0]",
        ),
        ("args: [" + ", ".join(["a"] * 257) + "]", "spec.args", "has 257 entries; at most 256"),
    ],
)
def test_bad_spec_fields(extra, field, problem):
    got_field, got_problem = problem_at(extra)
    assert got_field == field
    assert got_problem.startswith(problem)


def test_exact_messages_for_common_mistakes():
    assert (
        str(error_for(spec_with("replica: 3")))
        == "app.yaml: document 1: spec.replica: unknown field"
    )
    assert (
        str(error_for(spec_with("restartPolicy: Sometimes")))
        == "app.yaml: document 1: spec.restartPolicy: must be one of Always, OnFailure, Never,"
        ' not "Sometimes"'
    )
    assert (
        str(error_for(MINIMAL.replace("  image: busybox\n", "  replicas: 1\n")))
        == "app.yaml: document 1: spec.image: required"
    )


def test_a_validation_problem_has_file_document_and_yaml_path():
    text = MINIMAL + "---\n" + spec_with(
        "ports: [{containerPort: 80, hostPort: 8080}, {containerPort: 81, hostPort: 8080}]"
    ).replace("name: web", "name: api")
    assert str(error_for(text)) == (
        "app.yaml: document 2: spec.ports[1].hostPort: 8080/TCP is already published by"
        " spec.ports[0]"
    )


def test_the_replica_cap_is_left_to_the_server():
    # The CLI cannot know the scheduler's --max-replicas; the scheduler checks it.
    assert parse_one(spec_with("replicas: 100000")).spec.replicas == 100000


def test_server_metadata_is_accepted_and_dropped():
    text = MINIMAL.replace(
        "name: web",
        "name: web\n  uid: abc\n  generation: 4\n  createdUnixMs: 1\n  deletionRequested: false",
    )
    assert parse_one(text) == parse_one(MINIMAL)


# ---------------------------------------------------------------------------
# YAML itself


def test_yaml_syntax_error_has_line_and_document():
    text = MINIMAL + "---\n" + MINIMAL.replace("image: busybox", "image: busybox: 1")
    e = error_for(text)
    assert str(e).startswith("app.yaml: document 2: invalid YAML at line 13, column ")
    # The column and the wording after this differ between libyaml and pure-Python PyYAML.
    assert "mapping values are not allowed" in e.problem
    assert e.field is None


def test_yaml_tab_indentation_error():
    e = error_for("apiVersion: mctl/v1\n\tkind: Workload\n")
    assert e.document == 1
    assert e.problem.startswith("invalid YAML at line 2, column 1: ")


def test_duplicate_yaml_keys_are_errors():
    e = error_for(MINIMAL + "  image: alpine\n")
    assert str(e) == 'app.yaml: document 1: invalid YAML at line 7, column 3: duplicate key "image"'


def test_duplicate_nested_yaml_keys_are_errors():
    e = error_for(spec_with("env: {A: x, A: y}"))
    assert e.problem == 'invalid YAML at line 7, column 15: duplicate key "A"'


def test_unreadable_characters():
    e = error_for("apiVersion: mctl/v1\x07\n")
    assert e.problem.startswith("invalid YAML")
    assert e.document == 1


def test_deep_nesting_is_an_error_not_a_crash():
    e = error_for(spec_with("command: " + "[" * 5000 + "]" * 5000))
    assert e.problem.startswith("invalid YAML")


def test_json_is_yaml():
    data = {
        "apiVersion": "mctl/v1",
        "kind": "Workload",
        "metadata": {"name": "j"},
        "spec": {"image": "x"},
    }
    assert parse_one(json.dumps(data)).metadata.name == "j"


# ---------------------------------------------------------------------------
# Whole inputs


def test_duplicate_workload_names_the_second():
    text = MINIMAL + "---\n" + FULL + "---\n" + MINIMAL.replace("image: busybox", "image: alpine")
    e = error_for(text)
    assert str(e) == (
        'app.yaml: document 3: metadata.name: workload "web" in namespace "default"'
        " is already declared in app.yaml, document 1"
    )


def test_duplicate_workload_by_default_namespace():
    explicit = meta_with("namespace: default")
    e = error_for(MINIMAL + "---\n" + explicit)
    assert e.document == 2 and e.field == "metadata.name"


def test_whole_file_is_rejected(tmp_path):
    path = tmp_path / "app.yaml"
    path.write_text(MINIMAL + "---\n" + spec_with("resources: {memory: 64Mb}"))
    with pytest.raises(SpecError) as e:
        load_path(str(path))
    assert str(e.value) == f'{path}: document 2: spec.resources.memory: "64Mb" is not a quantity'


def test_load_file(tmp_path):
    path = tmp_path / "app.yaml"
    path.write_text(MINIMAL + "---\n" + FULL)
    loaded = load_path(str(path))
    assert [(source, w.metadata.namespace, w.metadata.name) for source, w in loaded] == [
        (str(path), "default", "web"),
        (str(path), "shop", "web"),
    ]


def test_load_file_with_default_namespace(tmp_path):
    path = tmp_path / "app.yaml"
    path.write_text(MINIMAL)
    [(_, w)] = load_path(str(path), default_namespace="team")
    assert w.metadata.namespace == "team"


def test_load_directory(tmp_path):
    (tmp_path / "b.yml").write_text(MINIMAL.replace("name: web", "name: b"))
    (tmp_path / "a.yaml").write_text(MINIMAL.replace("name: web", "name: a"))
    (tmp_path / "c.yaml").write_text("---\n")  # empty: contributes nothing
    (tmp_path / "notes.txt").write_text("not: yaml: at all:")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.yaml").write_text(MINIMAL.replace("name: web", "name: d"))
    (tmp_path / "dir.yaml").mkdir()
    loaded = load_path(str(tmp_path))
    assert [(source, w.metadata.name) for source, w in loaded] == [
        (str(tmp_path / "a.yaml"), "a"),
        (str(tmp_path / "b.yml"), "b"),
    ]


def test_directory_errors_name_the_file(tmp_path):
    (tmp_path / "a.yaml").write_text(MINIMAL)
    (tmp_path / "b.yaml").write_text(MINIMAL.replace("busybox", "busybox\n  replica: 2"))
    with pytest.raises(SpecError) as e:
        load_path(str(tmp_path))
    assert str(e.value) == f"{tmp_path / 'b.yaml'}: document 1: spec.replica: unknown field"


def test_duplicates_across_files_of_a_directory(tmp_path):
    (tmp_path / "a.yaml").write_text(MINIMAL)
    (tmp_path / "b.yaml").write_text(FULL + "---\n" + MINIMAL)
    with pytest.raises(SpecError) as e:
        load_path(str(tmp_path))
    assert (e.value.source, e.value.document, e.value.field) == (
        str(tmp_path / "b.yaml"),
        2,
        "metadata.name",
    )
    assert e.value.problem.endswith(f"already declared in {tmp_path / 'a.yaml'}, document 1")


def test_directory_without_yaml_files(tmp_path):
    (tmp_path / "readme.md").write_text("hi")
    with pytest.raises(SpecError) as e:
        load_path(str(tmp_path))
    assert str(e.value) == f"{tmp_path}: directory has no *.yaml or *.yml files"


def test_missing_file():
    with pytest.raises(SpecError) as e:
        load_path("/nonexistent/app.yaml")
    assert str(e.value) == "/nonexistent/app.yaml: cannot read: no such file or directory"
    assert e.value.document is None and e.value.field is None


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "app.yaml"
    path.write_bytes(b"apiVersion: \xff\n")
    with pytest.raises(SpecError) as e:
        load_path(str(path))
    assert str(e.value) == f"{path}: not UTF-8 text (byte 12)"


def test_file_without_workloads(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n---\n")
    with pytest.raises(SpecError) as e:
        load_path(str(path))
    assert str(e.value) == f"{path}: no workloads found"


def test_load_stdin(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(MINIMAL + "---\n" + FULL))
    loaded = load_path("-")
    assert [(source, w.metadata.namespace) for source, w in loaded] == [
        ("<stdin>", "default"),
        ("<stdin>", "shop"),
    ]


def test_stdin_errors_name_stdin(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(spec_with("replicas: many")))
    with pytest.raises(SpecError) as e:
        load_path("-")
    assert str(e.value) == '<stdin>: document 1: spec.replicas: must be an integer, not "many"'


def test_empty_stdin(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(SpecError) as e:
        load_path("-")
    assert str(e.value) == "<stdin>: no workloads found"


# ---------------------------------------------------------------------------
# spec_hash


def test_spec_hash_is_pinned():
    # Pinned: a change here would roll every running replica after an upgrade.
    assert spec_hash(parse_one(MINIMAL).spec) == "26dd0b9fc221"


def test_spec_hash_ignores_replicas_and_update():
    base = spec_hash(parse_one(MINIMAL).spec)
    assert len(base) == 12 and int(base, 16) >= 0
    assert spec_hash(parse_one(spec_with("replicas: 7")).spec) == base
    assert spec_hash(parse_one(spec_with("update: {maxSurge: 0}")).spec) == base


def test_spec_hash_ignores_spelled_out_defaults_and_metadata():
    base = spec_hash(parse_one(MINIMAL).spec)
    spelled = spec_with(
        "resources: {cpu: 250m, memory: 64Mi, pids: 256}\nrestartPolicy: Always\nspread: true\n"
    )
    assert spec_hash(parse_one(spelled).spec) == base
    labelled = meta_with("labels: {a: b}")
    assert spec_hash(parse_one(labelled).spec) == base


@pytest.mark.parametrize(
    "text",
    [
        MINIMAL.replace("busybox", "alpine"),
        spec_with("env: {A: b}"),
        spec_with("resources: {cpu: 1}"),
        spec_with("spread: false"),
        spec_with("args: [x]"),
        spec_with("healthCheck: {tcpPort: 80}"),
    ],
)
def test_spec_hash_changes_with_the_container(text):
    assert spec_hash(parse_one(text).spec) != spec_hash(parse_one(MINIMAL).spec)


def test_spec_hash_does_not_modify_its_argument():
    spec = parse_one(spec_with("replicas: 5")).spec
    spec_hash(spec)
    assert spec.replicas == 5 and spec.HasField("update")


# ---------------------------------------------------------------------------
# workload_to_dict


def test_minimal_to_dict():
    assert workload_to_dict(parse_one(MINIMAL)) == {
        "apiVersion": "mctl/v1",
        "kind": "Workload",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 1,
            "image": "busybox",
            "resources": {"cpu": "250m", "memory": "64Mi", "pids": 256},
            "restartPolicy": "Always",
            "spread": True,
            "update": {"maxUnavailable": 1, "maxSurge": 1},
            "securityContext": {"userNamespace": False, "readOnlyRootfs": False,
                                "seccompProfile": "RuntimeDefault"},
        },
    }


def test_full_to_dict():
    d = workload_to_dict(parse_one(FULL))
    assert d["metadata"] == {
        "name": "web",
        "namespace": "shop",
        "labels": {"app": "web", "example.com/tier": "front"},
    }
    assert d["spec"]["env"] == {"GREETING": "hello", "EMPTY": ""}
    assert d["spec"]["resources"] == {"cpu": "500m", "memory": "128Mi", "pids": 128}
    assert d["spec"]["ports"] == [
        {"containerPort": 8080, "hostPort": 18080, "protocol": "TCP"},
        {"containerPort": 53, "protocol": "UDP"},
    ]
    assert d["spec"]["healthCheck"] == {
        "exec": ["/bin/cat", "/tmp/healthy"],
        "periodSeconds": 5,
        "failureThreshold": 2,
    }
    assert list(d["spec"]) == [
        "replicas", "image", "command", "args", "env", "workingDir", "hostname", "resources",
        "ports", "restartPolicy", "healthCheck", "nodeSelector", "spread", "update",
        "securityContext",
    ]  # fmt: skip


def test_to_dict_shows_server_metadata_and_it_can_be_applied_again():
    w = parse_one(MINIMAL)
    w.metadata.uid = "u-1"
    w.metadata.generation = 3
    w.metadata.created_unix_ms = 1700000000000
    d = workload_to_dict(w)
    assert d["metadata"] == {
        "name": "web",
        "namespace": "default",
        "uid": "u-1",
        "generation": 3,
        "createdUnixMs": 1700000000000,
    }
    assert parse_one(yaml.safe_dump(d)) == parse_one(MINIMAL)


def test_to_dict_shows_the_virtual_ip_and_apply_drops_it():
    w = parse_one(spec_with("ports: [{containerPort: 80}]\n"))
    w.status.virtual_ip = "10.96.0.12"
    d = workload_to_dict(w)
    assert d["status"] == {"virtualIP": "10.96.0.12"}
    again = parse_one(yaml.safe_dump(d))
    assert not again.HasField("status")
    w.ClearField("status")
    assert again == w
    assert "status" not in workload_to_dict(parse_one(MINIMAL))


@pytest.mark.parametrize("text", [MINIMAL, FULL])
def test_round_trip_through_yaml_and_json(text):
    w = parse_one(text)
    d = workload_to_dict(w)
    assert parse_one(yaml.safe_dump(d, sort_keys=False)) == w
    assert parse_one(json.dumps(d)) == w


_label = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?\Z")
_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=8)
_env_name = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,6}\Z")
_port = st.integers(1, 65535)
# An argv: its first element names the program, so it is never empty.
_argv = st.tuples(_text.filter(bool), st.lists(_text, max_size=2)).map(lambda t: [t[0], *t[1]])
# Image references: [host[:port]/]path[:tag], as common/imageref.py accepts them.
_image = st.from_regex(
    r"\A([a-z0-9]{1,5}(\.[a-z0-9]{1,3})?(:[0-9]{1,4})?/)?[a-z0-9]{1,6}([._-][a-z0-9]{1,3})?"
    r"(/[a-z0-9]{1,4})?(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,5})?\Z")


@st.composite
def workload_documents(draw: st.DrawFn) -> dict:
    """Valid workload documents with any mix of optional fields."""
    spec: dict = {"image": draw(_image)}
    optional = {
        "replicas": st.integers(0, 100),
        "command": st.one_of(st.just([]), _argv),
        "args": st.lists(_text, max_size=3),
        "env": st.one_of(
            st.dictionaries(_env_name, _text, max_size=3),
            st.dictionaries(_env_name, _text, max_size=3).map(
                lambda env: [{"name": k, "value": v} for k, v in env.items()]
            ),
        ),
        "workingDir": st.from_regex(r"\A/[a-z/]{0,8}\Z"),
        "hostname": _label,
        "resources": st.fixed_dictionaries(
            {},
            optional={
                "cpu": st.one_of(st.integers(1, 64), st.integers(1, 64000).map(lambda m: f"{m}m")),
                "memory": st.one_of(
                    st.integers(1, 2**40), st.integers(1, 4096).map(lambda n: f"{n}Mi")
                ),
                "pids": st.integers(1, 10000),
            },
        ),
        "ports": st.lists(
            st.fixed_dictionaries(
                {"containerPort": _port},
                optional={"protocol": st.sampled_from(["TCP", "UDP"])},
            ),
            max_size=3,
            # The same unpublished port twice is an error (test_validation.py).
            unique_by=lambda p: (p["containerPort"], p.get("protocol", "TCP")),
        ),
        "restartPolicy": st.sampled_from(["Always", "OnFailure", "Never"]),
        "healthCheck": st.one_of(
            st.fixed_dictionaries({"exec": _argv}),
            st.fixed_dictionaries({"tcpPort": _port, "periodSeconds": st.integers(1, 60)}),
        ),
        "readiness": st.one_of(
            st.fixed_dictionaries({"exec": _argv}),
            st.fixed_dictionaries({"tcpPort": _port, "failureThreshold": st.integers(1, 9)}),
        ),
        "nodeSelector": st.dictionaries(_label, _label, max_size=2),
        "spread": st.booleans(),
        "update": st.fixed_dictionaries(
            {"maxUnavailable": st.integers(1, 3)}, optional={"maxSurge": st.integers(0, 3)}
        ),
        "securityContext": st.fixed_dictionaries(
            {}, optional={"userNamespace": st.booleans(), "readOnlyRootfs": st.booleans(),
                          "seccompProfile": st.sampled_from(["RuntimeDefault", "Unconfined"])}
        ),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            spec[key] = draw(strategy)
    for i, port in enumerate(spec.get("ports", [])):
        if draw(st.booleans()):
            port["name"] = f"port-{i}"      # names are unique (test_validation.py)
    metadata: dict = {"name": draw(_label)}
    if draw(st.booleans()):
        metadata["namespace"] = draw(_label)
    if draw(st.booleans()):
        metadata["labels"] = draw(st.dictionaries(_label, _label, max_size=3))
    return {"apiVersion": "mctl/v1", "kind": "Workload", "metadata": metadata, "spec": spec}


@settings(max_examples=examples(200))
@given(workload_documents())
def test_round_trip_property(document):
    w = parse_one(yaml.safe_dump(document))
    # Not allow_unicode=True: PyYAML then emits U+0085 raw and reads it back as a line break.
    dumped = yaml.safe_dump(workload_to_dict(w), sort_keys=False)
    again = parse_one(dumped)
    assert again == w
    assert spec_hash(again.spec) == spec_hash(w.spec)


def test_replace_failed_is_off_by_default_and_round_trips():
    assert parse_one(MINIMAL).spec.replace_failed is False
    w = parse_one(spec_with("replaceFailed: true"))
    assert w.spec.replace_failed is True
    assert workload_to_dict(w)["spec"]["replaceFailed"] is True
    assert "replaceFailed" not in workload_to_dict(parse_one(MINIMAL))["spec"]
    with pytest.raises(SpecError, match=r'spec.replaceFailed: must be true or false, not "x"'):
        parse_one(spec_with('replaceFailed: "x"'))


def test_seccomp_profile_defaults_to_runtime_default_stored_as_empty():
    # Stored empty, so the spec hash of a workload from before the field is unchanged.
    minimal = parse_one(MINIMAL)
    assert minimal.spec.security_context.seccomp_profile == ""
    spelled = parse_one(spec_with("securityContext: {seccompProfile: RuntimeDefault}"))
    assert spelled.spec.security_context.seccomp_profile == ""
    assert spec_hash(spelled.spec) == spec_hash(minimal.spec)
    unconfined = parse_one(spec_with("securityContext: {seccompProfile: Unconfined}"))
    assert unconfined.spec.security_context.seccomp_profile == "Unconfined"
    assert spec_hash(unconfined.spec) != spec_hash(minimal.spec)
    assert workload_to_dict(unconfined)["spec"]["securityContext"]["seccompProfile"] == \
        "Unconfined"
    assert parse_one(yaml.safe_dump(workload_to_dict(unconfined))) == unconfined


@pytest.mark.parametrize("value", ["Localhost", "runtime/default", "", 1])
def test_seccomp_profile_must_be_one_of_the_two(value):
    with pytest.raises(SpecError) as e:
        parse_one(spec_with(f"securityContext: {{seccompProfile: {json.dumps(value)}}}"))
    assert e.value.field == "spec.securityContext.seccompProfile"
    assert "must be one of RuntimeDefault, Unconfined" in e.value.problem

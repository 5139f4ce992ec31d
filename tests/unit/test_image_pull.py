"""Pure parts of registry pulls: which references a registry serves, skopeo's errors in one line."""

from __future__ import annotations

import pytest

from mctl.agent.images.pull import is_pulled
from mctl.common import imageref
from mctl.common.skopeo import MESSAGE_MAX, explain

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("ref, registry", [
    ("busybox", None), ("busybox:latest", None), ("team/app:1", None),
    ("registry.local/app", "registry.local"), ("registry.local:5000/team/app:1.2",
                                               "registry.local:5000"),
    ("localhost/app", "localhost"), ("127.0.0.1:5000/app@" + DIGEST, "127.0.0.1:5000"),
    ("app.v2", None),               # one component: a name, never a host
])
def test_registry_of(ref, registry):
    assert imageref.registry_of(ref) == registry
    assert is_pulled(ref) == (registry is not None)


@pytest.mark.parametrize("ref, problem", [
    ("reg.local/app@" + DIGEST, None), ("reg.local/app:1@" + DIGEST, None),
    ("reg.local/app@sha256:abc", "the digest after @"),
    ("reg.local/app@md5:" + "a" * 32, "the digest after @"),
    ("reg.local/App@" + DIGEST, "not an image reference"),
])
def test_reference_problem(ref, problem):
    found = imageref.reference_problem(ref)
    assert (found is None) if problem is None else (problem in (found or ""))


def test_normalize_reference_keeps_a_pinned_one():
    assert imageref.normalize_reference("reg.local/app") == "reg.local/app:latest"
    assert imageref.normalize_reference("reg.local/app@" + DIGEST) == "reg.local/app@" + DIGEST
    assert imageref.digest_of("reg.local/app@" + DIGEST) == DIGEST
    assert imageref.fetch_reference("reg.local:5000/app:1.2@" + DIGEST) == \
        "reg.local:5000/app@" + DIGEST
    assert imageref.fetch_reference("reg.local:5000/app:1.2") == "reg.local:5000/app:1.2"


def test_explain_takes_skopeos_message_without_the_reference():
    ref = "reg.local:5000/team/app:2"
    stderr = ('time="2026-01-01T00:00:00Z" level=fatal msg="initializing source docker://'
              f'{ref}: reading manifest 2 in reg.local:5000/team/app: manifest unknown: '
              'manifest unknown"\n')
    assert explain(stderr, ref) == ("reading manifest 2 in reg.local:5000/team/app: "
                                    "manifest unknown: manifest unknown")


def test_explain_unescapes_quotes_and_bounds_the_line():
    stderr = 'level=fatal msg="Get \\"https://r/v2/\\": ' + "x" * 1000 + '"\n'
    line = explain(stderr, "r/a:1")
    assert line.startswith('Get "https://r/v2/": ') and len(line) == MESSAGE_MAX
    assert line.endswith("...")


def test_explain_without_a_message_keeps_the_last_line():
    assert explain("something\nbroke badly\n", "r/a:1") == "broke badly"
    assert explain("", "r/a:1") == "skopeo failed without saying why"


FILE = """\
apiVersion: mctl/v1
kind: Workload
metadata: {name: web}
spec:
  image: reg.local:5000/team/app:1.2
  imagePullPolicy: %s
  imagePullSecret: reg-creds
"""


def test_image_pull_fields_are_read_and_shown_back():
    from mctl.common.spec import parse_documents, workload_to_dict
    [w] = parse_documents(FILE % "Always", "web.yaml")
    assert (w.spec.image_pull_policy, w.spec.image_pull_secret) == ("Always", "reg-creds")
    w.spec.image_digest = DIGEST          # as the scheduler stores it
    doc = workload_to_dict(w)
    assert doc["spec"]["imagePullPolicy"] == "Always"
    assert doc["status"]["imageDigest"] == DIGEST
    # IfNotPresent is the default, stored as "" so older specs keep their hash.
    [w] = parse_documents(FILE % "IfNotPresent", "web.yaml")
    assert w.spec.image_pull_policy == "" and "imagePullPolicy" not in workload_to_dict(w)["spec"]


def test_a_bad_image_pull_policy_names_the_field():
    from mctl.common.spec import SpecError, parse_documents
    with pytest.raises(SpecError, match="spec.imagePullPolicy"):
        parse_documents(FILE % "Sometimes", "web.yaml")


def test_a_failed_pull_is_one_event_per_spell_of_failures():
    from mctl.scheduler.status import status_events
    from mctl.v1 import types_pb2
    pending = types_pb2.ReplicaStatus(phase=types_pb2.REPLICA_PHASE_PENDING)
    failing = types_pb2.ReplicaStatus(
        phase=types_pb2.REPLICA_PHASE_PENDING, reason=types_pb2.REPLICA_REASON_IMAGE_PULL_ERROR,
        message="manifest unknown (attempt 1; next in 1s)")
    [e] = status_events(("default", "web-1"), "node1", pending, failing)
    assert e.reason == "ImagePullError" and e.type == "Warning"
    assert e.message == "image pull failed on node node1: manifest unknown (attempt 1; next in 1s)"
    again = types_pb2.ReplicaStatus()
    again.CopyFrom(failing)
    again.message = "manifest unknown (attempt 2; next in 2s)"
    assert status_events(("default", "web-1"), "node1", failing, again) == []

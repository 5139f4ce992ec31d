"""Configs, Secrets and named volumes on the control plane: files, rules, sealing, API, plans."""

from __future__ import annotations

import logging
import os
from collections import Counter

import grpc
import pytest
from fake_store import FakeStore
from test_scheduler_api import Aborted, Context, DirectReads

from mctl.common import spec, validation
from mctl.scheduler import objects, placement, secretbox
from mctl.scheduler.api import ControlPlane
from mctl.scheduler.controller import Controller
from mctl.scheduler.model import NodeView, Resources
from mctl.scheduler.usage import UsageCache
from mctl.v1 import control_pb2, types_pb2

PASSWORD = "hunter2-correct-horse"

FILE = f"""
apiVersion: mctl/v1
kind: Config
metadata: {{name: api-config}}
data:
  app.ini: |
    port = 8080
  mode: fast
---
apiVersion: mctl/v1
kind: Secret
metadata: {{name: api-secret}}
data:
  password: {PASSWORD}
---
apiVersion: mctl/v1
kind: Workload
metadata: {{name: api}}
spec:
  replicas: 2
  image: busybox
  env:
    - {{name: DB_PASSWORD, valueFrom: {{secret: api-secret, key: password}}}}
    - {{name: MODE, valueFrom: {{config: api-config, key: mode}}}}
    - {{name: PLAIN, value: x}}
  volumes:
    - {{name: data, volume: api-data}}
    - {{name: scratch, emptyDir: {{sizeLimit: 64Mi, medium: Memory}}}}
    - {{name: conf, config: api-config}}
    - {{name: creds, secret: api-secret}}
    - {{name: logs, hostPath: {{path: /var/log/api}}}}
  volumeMounts:
    - {{name: data, mountPath: /var/lib/api}}
    - {{name: conf, mountPath: /etc/api, readOnly: true}}
    - {{name: creds, mountPath: /run/secrets/api}}
"""


def objects_of(text: str = FILE) -> tuple[list, list, list]:
    found = spec.parse_objects(text, "app.yaml")
    return ([o for o in found if isinstance(o, types_pb2.Config)],
            [o for o in found if isinstance(o, types_pb2.Secret)],
            [o for o in found if isinstance(o, types_pb2.Workload)])


# -- the file ----------------------------------------------------------------------------


def test_a_file_holds_configs_secrets_and_workloads_that_read_back_the_same():
    configs, secrets, workloads = objects_of()
    assert dict(configs[0].data) == {"app.ini": "port = 8080\n", "mode": "fast"}
    assert dict(secrets[0].data) == {"password": PASSWORD.encode()}
    [w] = workloads
    assert [v.WhichOneof("source") for v in w.spec.volumes] == [
        "volume", "empty_dir", "config", "secret", "host_path"]
    assert w.spec.volumes[1].empty_dir.size_limit_bytes == 64 << 20
    assert w.spec.volume_mounts[1].HasField("read_only")
    assert not w.spec.volume_mounts[0].HasField("read_only")
    assert w.spec.env[0].value_from.secret == "api-secret"
    import yaml
    again = spec.parse_documents(yaml.safe_dump(spec.workload_to_dict(w), sort_keys=False),
                                 "again.yaml")[0]
    assert again == w
    assert spec.config_to_dict(configs[0])["data"]["mode"] == "fast"
    assert validation.references(w.spec) == ({"api-config"}, {"api-secret"}, {"api-data"})


def bad(text: str) -> spec.SpecError:
    with pytest.raises(spec.SpecError) as e:
        spec.parse_objects(text, "app.yaml")
    return e.value


def workload_with(extra: str) -> str:
    return ("apiVersion: mctl/v1\nkind: Workload\nmetadata: {name: w}\n"
            "spec:\n  image: busybox\n" + extra)


VOLS = "  volumes: [{name: a, emptyDir: {}}, {name: b, emptyDir: {}}]\n"


@pytest.mark.parametrize("extra, field, problem", [
    (VOLS + "  volumeMounts: [{name: c, mountPath: /x}]\n",
     "spec.volumeMounts[0].name", '"c" names no volume'),
    (VOLS + "  volumeMounts: [{name: a, mountPath: /x}, {name: b, mountPath: /x/}]\n",
     "spec.volumeMounts[1].mountPath", 'is already mounted by spec.volumeMounts[0]'),
    (VOLS + "  volumeMounts: [{name: a, mountPath: x}]\n",
     "spec.volumeMounts[0].mountPath", '"x" is not an absolute path'),
    (VOLS + "  volumeMounts: [{name: a, mountPath: /data/../etc}]\n",
     "spec.volumeMounts[0].mountPath", "must not contain"),
    (VOLS + "  volumeMounts: [{name: a, mountPath: /proc}]\n",
     "spec.volumeMounts[0].mountPath", '"/proc" is under /proc'),
    (VOLS + "  volumeMounts: [{name: a, mountPath: /dev/shm}]\n",
     "spec.volumeMounts[0].mountPath", '"/dev/shm" is under /dev'),
    (VOLS + "  volumeMounts: [{name: a, mountPath: //sys/x}]\n",
     "spec.volumeMounts[0].mountPath", "is under /sys"),
    (VOLS + "  volumeMounts: [{name: a, mountPath: /}]\n",
     "spec.volumeMounts[0].mountPath", "must not be the container's root"),
    ("  volumes: [{name: a, emptyDir: {}}, {name: a, volume: v}]\n",
     "spec.volumes[1].name", '"a" is declared twice'),
    ("  volumes: [{name: a}]\n", "spec.volumes[0]", "needs exactly one of"),
    ("  volumes: [{name: a, volume: v, config: c}]\n", "spec.volumes[0]",
     "needs exactly one of volume, emptyDir, config, secret, hostPath, not volume and config"),
    ("  volumes: [{name: a, emptyDir: {sizeLimit: 64Mb}}]\n",
     "spec.volumes[0].emptyDir.sizeLimit", '"64Mb" is not a quantity'),
    ("  volumes: [{name: a, emptyDir: {sizeLimit: 2Ti}}]\n",
     "spec.volumes[0].emptyDir.sizeLimit", "must be between 1Mi and 1Ti"),
    ("  volumes: [{name: a, emptyDir: {medium: Disk}}]\n",
     "spec.volumes[0].emptyDir.medium", "must be one of"),
    ("  volumes: [{name: a, hostPath: {path: var/log}}]\n",
     "spec.volumes[0].hostPath.path", "is not an absolute path"),
    ("  volumes: [{name: a, volume: Bad_Name}]\n", "spec.volumes[0].volume", ""),
    ("  volumes: [{name: a, secret: s}]\n  volumeMounts: [{name: a, mountPath: /s,"
     " readOnly: false}]\n", "spec.volumeMounts[0].readOnly", "secret volumes are read-only"),
    ("  env: [{name: A, valueFrom: {config: c, secret: s, key: k}}]\n",
     "spec.env[0].valueFrom", "needs exactly one of config or secret, not both"),
    ("  env: [{name: A, valueFrom: {key: k}}]\n",
     "spec.env[0].valueFrom", "needs exactly one of config or secret, not neither"),
    ("  env: [{name: A, valueFrom: {config: c}}]\n", "spec.env[0].valueFrom.key", "required"),
    ("  env: [{name: A, valueFrom: {config: c, key: ../x}}]\n",
     "spec.env[0].valueFrom.key", "is not a valid key"),
    ("  env: [{name: A, value: v, valueFrom: {config: c, key: k}}]\n",
     "spec.env[0].value", "must not be given with valueFrom"),
])
def test_bad_volumes_mounts_and_env_sources_name_their_field(extra, field, problem):
    e = bad(workload_with(extra))
    assert e.field == field
    assert problem in e.problem


@pytest.mark.parametrize("key", ["a/b", "..", ".", "", "a b", "x" * 254])
def test_keys_are_file_names(key):
    text = (f"apiVersion: mctl/v1\nkind: Config\nmetadata: {{name: c}}\n"
            f"data: {{{key!r}: v}}\n")
    e = bad(text)
    assert e.field == "data"


def test_objects_are_bounded_and_secret_values_never_quoted():
    big = "x" * (validation.MAX_OBJECT_BYTES + 1)
    e = bad(f"apiVersion: mctl/v1\nkind: Config\nmetadata: {{name: c}}\ndata: {{k: {big}}}\n")
    assert "at most 1048576 (1Mi)" in e.problem
    e = bad("apiVersion: mctl/v1\nkind: Secret\nmetadata: {name: s}\ndata: {k: 12345}\n")
    assert e.field == "data.k" and "12345" not in str(e)
    e = bad("apiVersion: mctl/v1\nkind: Secret\nmetadata: {name: s}\nspec: {}\n")
    assert e.field == "spec" and e.problem == "unknown field"


def test_missing_references_are_found_unless_the_apply_brings_them():
    _, _, [w] = objects_of()
    found = validation.reference_problem(w, {}, {})
    assert found is not None and found.field == "spec.volumes[2].config"
    found = validation.reference_problem(w, {"api-config": {"app.ini"}},
                                         {"api-secret": {"password"}})
    assert found is not None and found.field == "spec.env[1].valueFrom.key"
    assert "has no key \"mode\"" in found.problem
    assert validation.reference_problem(w, {"api-config": {"mode"}},
                                        {"api-secret": {"password"}}) is None


# -- sealing ---------------------------------------------------------------------------


def secret(name: str = "db", **data: str) -> types_pb2.Secret:
    x = types_pb2.Secret()
    x.metadata.namespace, x.metadata.name = "default", name
    for k, v in data.items():
        x.data[k] = v.encode()
    return x


def test_a_sealed_secret_opens_with_its_key_only_and_holds_no_clear_text():
    key, other = os.urandom(32), os.urandom(32)
    box = secretbox.SecretBox([key])
    sealed = box.seal(secret(password=PASSWORD))
    assert PASSWORD.encode() not in sealed and b"password" not in sealed
    assert box.open(sealed, "default", "db").secret.data["password"] == PASSWORD.encode()
    with pytest.raises(secretbox.SecretBoxError, match="not in --encryption-key-file"):
        secretbox.SecretBox([other]).open(sealed, "default", "db")
    # Copied to another name, or one bit flipped: refused, never garbage.
    with pytest.raises(secretbox.SecretBoxError, match="does not open"):
        box.open(sealed, "default", "other")
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(secretbox.SecretBoxError, match="does not open"):
        box.open(flipped, "default", "db")
    with pytest.raises(secretbox.SecretBoxError, match="not sealed"):
        box.open(b"password: " + PASSWORD.encode(), "default", "db")


def test_rotation_opens_old_values_and_reseals_keeping_the_version():
    old, new = os.urandom(32), os.urandom(32)
    sealed = secretbox.SecretBox([old]).seal(secret(password=PASSWORD))
    both = secretbox.SecretBox([new, old])
    opened = both.open(sealed, "default", "db")
    resealed = both.seal(opened.secret, opened.version)
    assert secretbox.key_id_of(resealed) == secretbox.key_id(new)
    assert secretbox.version_of(resealed) == secretbox.version_of(sealed)
    assert secretbox.SecretBox([new]).open(resealed, "default", "db").secret == opened.secret


def test_key_files_are_private_and_well_formed(tmp_path):
    path = str(tmp_path / "k")
    secretbox.write_key_file(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    secretbox.load_key_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(secretbox.SecretBoxError, match="lets others read"):
        secretbox.load_key_file(path)
    with pytest.raises(secretbox.SecretBoxError, match="line 1 holds 3 bytes"):
        secretbox.parse_keys("abcdef\n")
    with pytest.raises(secretbox.SecretBoxError, match="no key"):
        secretbox.parse_keys("# nothing\n")


# -- placement with volumes ------------------------------------------------------------------


def node(name: str, memory: int = 1 << 30) -> placement.NodeState:
    return placement.NodeState(NodeView(name=name, capacity=Resources(4000, memory, 1000),
                                        ready=True))


def req(volumes: tuple[str, ...] = (), memory: int = 64 << 20, **kw) -> placement.PlacementRequest:
    return placement.PlacementRequest(workload_key=kw.pop("workload", "default/a"),
                                      request=Resources(100, memory, 10), volumes=volumes, **kw)


def test_every_user_of_a_volume_lands_where_the_first_one_did():
    bound: dict[str, str] = {}
    reqs = [(f"r{i}", req(("default/data",), workload=f"default/w{i % 2}")) for i in range(6)]
    results = placement.place_batch(reqs, [node("n1"), node("n2"), node("n3")], 3, bound)
    assert len({r.node for r in results.values()}) == 1
    assert bound == {"default/data": results["r0"].node}


def test_a_user_that_does_not_fit_on_the_volume_node_waits_saying_why():
    bound = {"default/api-data": "node2"}
    results = placement.place_batch([("r", req(("default/api-data",), memory=1 << 31))],
                                    [node("node1"), node("node2"), node("node3")], 1, bound)
    assert results["r"].node is None
    message = placement.volume_message("api-data", "node2", results["r"].rejections, False)
    assert message == "volume api-data is on node2: insufficient memory"
    assert "lost" in placement.volume_message("api-data", "node2", Counter(), True)


def test_two_volumes_on_different_nodes_cannot_be_used_together():
    bound = {"default/a": "n1", "default/b": "n2"}
    results = placement.place_batch([("r", req(("default/a", "default/b")))],
                                    [node("n1"), node("n2")], 1, bound)
    assert results["r"].node is None
    assert "volumes a and b are on different nodes" in next(iter(results["r"].rejections))


# -- the API and the controller, on the in-memory store -------------------------------------


class Replicas:
    def wake(self) -> None:
        pass


@pytest.fixture
def api():
    store = FakeStore()
    box = secretbox.SecretBox([os.urandom(32)])
    plane = ControlPlane(store, DirectReads(store), Replicas(), UsageCache(),  # type: ignore
                         lambda node: None, secret_box=box)
    return store, plane, box


def apply(plane: ControlPlane, text: str = FILE) -> list[tuple[str, str, str]]:
    configs, secrets, workloads = objects_of(text)
    resp = plane.Apply(control_pb2.ApplyRequest(configs=configs, secrets=secrets,
                                                workloads=workloads), Context())
    return [(r.kind, r.name, r.action) for r in resp.results]


def test_apply_stores_secrets_sealed_lists_keys_only_and_is_idempotent(api, caplog):
    store, plane, _ = api
    caplog.set_level(logging.DEBUG)
    assert apply(plane) == [("Config", "api-config", "created"),
                            ("Secret", "api-secret", "created"), ("Workload", "api", "created")]
    assert apply(plane) == [("Config", "api-config", "unchanged"),
                            ("Secret", "api-secret", "unchanged"),
                            ("Workload", "api", "unchanged")]
    raw, _ = store.get(store.keys.secret("default", "api-secret"))
    assert raw is not None and PASSWORD.encode() not in raw
    listed = plane.ListSecrets(control_pb2.ListRequest(), Context())
    assert [(x.metadata.name, list(x.keys)) for x in listed.items] == [
        ("api-secret", ["password"])]
    assert PASSWORD.encode() not in listed.SerializeToString()
    configs = plane.ListConfigs(control_pb2.ListRequest(), Context())
    assert configs.items[0].data["mode"] == "fast"
    assert PASSWORD not in caplog.text


def test_an_apply_naming_a_missing_config_stores_nothing(api):
    store, plane, _ = api
    _, _, workloads = objects_of()
    with pytest.raises(Aborted) as e:
        plane.Apply(control_pb2.ApplyRequest(workloads=workloads), Context())
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "spec.volumes[2].config: config \"api-config\" does not exist" in e.value.details
    assert store.get(store.keys.workload("default", "api"))[0] is None


def test_a_scheduler_without_a_key_refuses_secrets():
    store = FakeStore()
    plane = ControlPlane(store, DirectReads(store), Replicas(), UsageCache(),  # type: ignore
                         lambda node: None)
    with pytest.raises(Aborted, match="no --encryption-key-file"):
        apply(plane)


def test_a_secret_sealed_under_another_key_is_refused_not_overwritten(api):
    store, plane, _ = api
    apply(plane)
    plane.box = secretbox.SecretBox([os.urandom(32)])
    plane.secrets = objects.SecretReader(plane.box)
    with pytest.raises(Aborted) as e:
        apply(plane, FILE.replace(PASSWORD, "new-value"))
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "not in --encryption-key-file" in e.value.details


def test_objects_and_volumes_in_use_are_not_deleted_and_the_refusal_names_the_users(api):
    store, plane, _ = api
    apply(plane)
    for field, kind in (("configs", "config"), ("secrets", "secret"), ("volumes", "volume")):
        name = {"configs": "api-config", "secrets": "api-secret", "volumes": "api-data"}[field]
        request = control_pb2.DeleteRequest(**{field: [control_pb2.ObjectRef(name=name)]})
        with pytest.raises(Aborted) as e:
            plane.Delete(request, Context())
        assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert e.value.details == f"{kind} default/{name} is used by workload api"
    plane.Delete(control_pb2.DeleteRequest(workloads=[control_pb2.ObjectRef(name="api")]),
                 Context())
    # Still there while the workload's record is (its replicas may run with it).
    with pytest.raises(Aborted):
        plane.Delete(control_pb2.DeleteRequest(configs=[control_pb2.ObjectRef(
            name="api-config")]), Context())
    store.commit([store_write(store, store.keys.workload("default", "api"), None)])
    resp = plane.Delete(control_pb2.DeleteRequest(
        configs=[control_pb2.ObjectRef(name="api-config")],
        secrets=[control_pb2.ObjectRef(name="api-secret")]), Context())
    assert [(r.kind, r.found) for r in resp.results] == [("Config", True), ("Secret", True)]


def store_write(store: FakeStore, key: str, value: bytes | None):
    from mctl.scheduler.store import Write
    return Write(key, value, store.get(key)[1])


def register(store: FakeStore, *names: str, memory: int = 1 << 30) -> None:
    for name in names:
        n = types_pb2.Node(name=name, address="127.0.0.1:1",
                           capacity=types_pb2.Resources(cpu_millis=4000, memory_bytes=memory,
                                                        pids=1000))
        store.commit([store_write(store, store.keys.node(name), n.SerializeToString()),
                      store_write(store, store.keys.heartbeat(name), b"1")])


def test_the_controller_binds_the_volume_and_a_data_change_rolls_the_users(api):
    store, plane, box = api
    apply(plane)
    register(store, "node1", "node2", "node3")
    controller = Controller(store, seed=5, secret_box=box)  # type: ignore[arg-type]
    store.commit(controller.plan(store.snapshot(), now=1000))
    snap = store.snapshot()
    [record] = snap.volumes.values()
    nodes = {r.node for r in snap.replicas.values()}
    assert nodes == {record.node} and len(snap.replicas) == 2
    first = {r.spec_hash for r in snap.replicas.values()}
    # The volume outlives a plan that sees nothing new, and each desired set
    # carries only what its replicas use, opened.
    assert controller.plan(snap, now=1001) == []
    configs, secrets, problems = objects.node_objects(snap, snap.replicas.values(),
                                                      controller.secrets)
    assert [c.metadata.name for c in configs] == ["api-config"] and problems == []
    assert secrets[0].data["password"] == PASSWORD.encode()
    assert objects.node_objects(snap, [], controller.secrets)[:2] == ([], [])
    # Labels alone keep the secret's version: nothing rolls.
    apply(plane, FILE.replace("metadata: {name: api-secret}",
                              "metadata: {name: api-secret, labels: {a: b}}"))
    snap = store.snapshot()
    w = snap.workloads[("default", "api")]
    assert objects.workload_hash(w, snap) in first
    # New data: a new hash, so reconcile replaces the replicas (a rolling update).
    apply(plane, FILE.replace(PASSWORD, "another-password"))
    snap = store.snapshot()
    assert objects.workload_hash(w, snap) not in first
    new = [types_pb2.Replica.FromString(wr.value) for wr in controller.plan(snap, now=2000)
           if "/replicas/" in wr.key and wr.value is not None
           and types_pb2.Replica.FromString(wr.value).spec_hash not in first]
    assert new and all(r.spec_hash == objects.workload_hash(w, snap) for r in new)


def test_a_replica_pinned_to_a_full_node_waits_with_the_volume_reason(api):
    store, plane, box = api
    apply(plane)
    register(store, "node1", "node2")
    controller = Controller(store, seed=5, secret_box=box)  # type: ignore[arg-type]
    volume = types_pb2.VolumeRecord(node="node2")
    volume.metadata.namespace, volume.metadata.name = "default", "api-data"
    store.commit([store_write(store, store.keys.volume("default", "api-data"),
                              volume.SerializeToString())])
    # node2 is full: the replicas wait, though node1 has room.
    full = types_pb2.Node(name="node2", address="127.0.0.1:1",
                          capacity=types_pb2.Resources(cpu_millis=4000, memory_bytes=1 << 20,
                                                       pids=1000))
    store.commit([store_write(store, store.keys.node("node2"), full.SerializeToString())])
    store.commit(controller.plan(store.snapshot(), now=1000))
    snap = store.snapshot()
    assert {r.node for r in snap.replicas.values()} == {""}
    assert {r.status.message for r in snap.replicas.values()} == {
        "volume api-data is on node2: insufficient memory"}
    # Its node removed for good: the volume is marked lost, never re-made elsewhere.
    store.commit([store_write(store, store.keys.node("node2"), None)])
    store.commit(controller.plan(store.snapshot(), now=2000))
    snap = store.snapshot()
    assert snap.volumes[("default", "api-data")].lost
    assert {r.node for r in snap.replicas.values()} == {""}
    assert all("which is lost" in r.status.message for r in snap.replicas.values())
    listed = plane.ListVolumes(control_pb2.ListRequest(), Context())
    assert [(v.metadata.name, v.node, v.lost, list(v.users)) for v in listed.items] == [
        ("api-data", "node2", True, ["api"])]



def test_rekey_reseals_under_the_first_key_and_rolls_nothing():
    from mctl.scheduler import rekey
    old_key, new_key = os.urandom(32), os.urandom(32)
    store = FakeStore()
    plane = ControlPlane(store, DirectReads(store), Replicas(), UsageCache(),  # type: ignore
                         lambda node: None, secret_box=secretbox.SecretBox([old_key]))
    apply(plane)
    before = store.snapshot()
    # The new key first (it seals), the old one kept (it opens).
    rotated = secretbox.SecretBox([new_key, old_key])
    assert rekey.reseal(store, rotated) == (1, [])  # type: ignore[arg-type]
    after = store.snapshot()
    sealed = after.secrets[("default", "api-secret")]
    assert secretbox.key_id_of(sealed) == secretbox.key_id(new_key)
    w = after.workloads[("default", "api")]
    assert objects.workload_hash(w, after) == objects.workload_hash(w, before)
    opened = secretbox.SecretBox([new_key]).open(sealed, "default", "api-secret")
    assert opened.secret.data["password"] == PASSWORD.encode()
    assert rekey.reseal(store, rotated) == (0, [])  # type: ignore[arg-type]
    done, problems = rekey.reseal(store, secretbox.SecretBox([os.urandom(32)]))  # type: ignore
    assert done == 0 and "not in --encryption-key-file" in problems[0]


def test_get_volumes_shows_what_the_node_last_reported(api):
    from mctl.v1 import node_pb2
    store, plane, _ = api
    apply(plane)
    volume = types_pb2.VolumeRecord(node="node1")
    volume.metadata.namespace, volume.metadata.name = "default", "api-data"
    store.commit([store_write(store, store.keys.volume("default", "api-data"),
                              volume.SerializeToString())])
    plane.usage.set_volumes("node2", [node_pb2.VolumeUsage(namespace="default",
                                                           name="api-data", used_bytes=7)])
    listed = plane.ListVolumes(control_pb2.ListRequest(), Context())
    assert listed.items[0].used_bytes == 0        # node2 does not keep it: not its word
    plane.usage.set_volumes("node1", [node_pb2.VolumeUsage(namespace="default",
                                                           name="api-data", used_bytes=4096)])
    listed = plane.ListVolumes(control_pb2.ListRequest(), Context())
    assert listed.items[0].used_bytes == 4096

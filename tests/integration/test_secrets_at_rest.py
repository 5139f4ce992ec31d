"""Secrets in a real etcd: sealed in every stored byte, opened only by the scheduler.

The scheduler's API, cache and controller (passes run by hand) over a real
etcd, as mctl-scheduler runs them; etcd is then read directly, key by key
and file by file of its data directory, for the value in clear.
"""

from __future__ import annotations

import logging
import os
import uuid

import grpc
import pytest

from mctl.common.spec import parse_objects
from mctl.scheduler import secretbox
from mctl.scheduler.api import ControlPlane
from mctl.scheduler.cache import StateCache
from mctl.scheduler.controller import Controller
from mctl.scheduler.objects import workload_hash
from mctl.scheduler.store import Conflict, Store
from mctl.scheduler.usage import UsageCache
from mctl.v1 import control_pb2, types_pb2

PASSWORD = "pa55-" + uuid.uuid4().hex     # unique: found only where this test put it

FILE = """
apiVersion: mctl/v1
kind: Secret
metadata: {{name: db, namespace: shop}}
data: {{password: {password}}}
---
apiVersion: mctl/v1
kind: Workload
metadata: {{name: api, namespace: shop}}
spec:
  replicas: 1
  image: busybox
  env: [{{name: PW, valueFrom: {{secret: db, key: password}}}}]
  volumes: [{{name: creds, secret: db}}, {{name: data, volume: api-data}}]
  volumeMounts: [{{name: creds, mountPath: /run/secrets/db}},
                 {{name: data, mountPath: /data}}]
"""


class Context:
    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise AssertionError(f"{code}: {details}")


def request(password: str) -> control_pb2.ApplyRequest:
    objects = parse_objects(FILE.format(password=password), "app.yaml")
    return control_pb2.ApplyRequest(
        secrets=[o for o in objects if isinstance(o, types_pb2.Secret)],
        workloads=[o for o in objects if isinstance(o, types_pb2.Workload)])


def test_no_secret_value_reaches_etcd_or_the_logs_and_a_change_rolls(etcd, caplog):
    caplog.set_level(logging.DEBUG)
    prefix = f"/test-{uuid.uuid4().hex[:8]}/"
    box = secretbox.SecretBox([os.urandom(32)])
    store = Store(etcd.endpoint, prefix=prefix, timeout=2)
    cache = StateCache(store)
    controller = Controller(store, seed=1, cache=cache, secret_box=box)
    api = ControlPlane(store, cache, controller, UsageCache(), controller.dial, secret_box=box)
    node = types_pb2.Node(name="node1", address="127.0.0.1:1",
                          capacity=types_pb2.Resources(cpu_millis=2000, memory_bytes=1 << 30,
                                                       pids=10000))
    store.put(store.keys.node("node1"), node.SerializeToString())
    store.put(store.keys.heartbeat("node1"), b"1")     # Ready (no lease: it stays)
    try:
        api.Apply(request(PASSWORD), Context())
        for _ in range(3):
            cache.latest()
            try:
                controller.reconcile_once()
            except Conflict:
                controller._fresh_read = True
        snap = cache.latest()
        [replica] = snap.replicas.values()
        assert replica.node == "node1"
        assert snap.volumes[("shop", "api-data")].node == "node1"
        old_hash = replica.spec_hash
        # What a desired set would carry: the value, opened in memory only.
        assert controller.secrets.open(snap, ("shop", "db")).data["password"] == \
            PASSWORD.encode()
        listed = api.ListSecrets(control_pb2.ListRequest(namespace="shop"), Context())
        assert list(listed.items[0].keys) == ["password"]
        assert PASSWORD.encode() not in listed.SerializeToString()

        # A new value: sealed anew, and the workload's hash moves on (a roll).
        api.Apply(request(PASSWORD + "-2"), Context())
        snap = cache.latest()
        assert workload_hash(snap.workloads[("shop", "api")], snap) != old_hash

        # Every stored value, read from etcd directly: sealed, nothing in clear.
        raw = b"".join(value for value, _ in store.client.get_prefix(prefix))
        assert b"password" in raw                      # the workload names the key
        assert PASSWORD.encode() not in raw
        stored = store.client.get(store.keys.secret("shop", "db"))[0]
        assert stored.startswith(secretbox.MAGIC)
        # etcd's own files (WAL and snapshots) hold only what it was sent.
        for root, _, files in os.walk(etcd.dir):
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    assert PASSWORD.encode() not in f.read(), os.path.join(root, name)
        assert PASSWORD not in caplog.text
    finally:
        controller.close()
        cache.close()
        store.client.delete_prefix(prefix)
        store.close()


def test_a_workload_naming_a_missing_secret_is_refused_and_nothing_stored(etcd):
    prefix = f"/test-{uuid.uuid4().hex[:8]}/"
    store = Store(etcd.endpoint, prefix=prefix, timeout=2)
    cache = StateCache(store)
    api = ControlPlane(store, cache, Controller(store, seed=1), UsageCache(), lambda n: None,
                       secret_box=secretbox.SecretBox([os.urandom(32)]))
    try:
        only_workload = control_pb2.ApplyRequest(workloads=request("x").workloads)
        with pytest.raises(AssertionError, match='secret "db" does not exist'):
            api.Apply(only_workload, Context())
        assert list(store.client.get_prefix(prefix)) == []
    finally:
        cache.close()
        store.close()

"""Configs, Secrets and named volumes through the real CLI, scheduler and etcd.

What the control plane does with them: apply (idempotent, whole-file),
get (secrets as names and keys only), delete (refused while used), the
sealing key `cluster up` makes, and no value in clear in etcd's files or
the scheduler's log. Containers that mount or read them are the node's side
(tests/e2e/test_volumes.py); the workload here asks for no replicas.
"""

from __future__ import annotations

import json
import os
import uuid

from conftest import Cluster  # noqa: I001 - the e2e fixtures module

PASSWORD = "pw-" + uuid.uuid4().hex

APP = f"""\
apiVersion: mctl/v1
kind: Config
metadata: {{name: app-config}}
data:
  app.ini: "port = 8080\\n"
  mode: fast
---
apiVersion: mctl/v1
kind: Secret
metadata: {{name: db}}
data: {{password: {PASSWORD}, user: admin}}
---
apiVersion: mctl/v1
kind: Workload
metadata: {{name: api}}
spec:
  replicas: 0
  image: busybox
  env:
    - {{name: PW, valueFrom: {{secret: db, key: password}}}}
    - {{name: MODE, valueFrom: {{config: app-config, key: mode}}}}
  volumes:
    - {{name: data, volume: api-data}}
    - {{name: conf, config: app-config}}
  volumeMounts:
    - {{name: data, mountPath: /data}}
    - {{name: conf, mountPath: /etc/app}}
"""

MISSING = """\
apiVersion: mctl/v1
kind: Workload
metadata: {name: orphan}
spec:
  image: busybox
  volumes: [{name: conf, config: nowhere}]
  volumeMounts: [{name: conf, mountPath: /etc/app}]
"""


def no_clear_text_under(path: str) -> list[str]:
    found = []
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                with open(full, "rb") as f:
                    if PASSWORD.encode() in f.read():
                        found.append(full)
            except OSError:
                continue        # a socket, or gone meanwhile
    return found


def test_configs_and_secrets_apply_list_refuse_and_delete(cluster: Cluster, tmp_path):
    key = cluster.dir / "encryption.key"
    assert os.stat(key).st_mode & 0o777 == 0o600
    app = tmp_path / "app.yaml"
    app.write_text(APP)
    out = cluster.mctl("apply", "-f", str(app)).stdout
    assert out.splitlines() == ["config/app-config created", "secret/db created",
                                "workload/api created"]
    out = cluster.mctl("apply", "-f", str(app)).stdout
    assert out.splitlines() == ["config/app-config unchanged", "secret/db unchanged",
                                "workload/api unchanged"]

    table = cluster.mctl("get", "configs").stdout
    assert "app-config" in table and "app.ini,mode" in table
    for fmt in ("table", "json", "yaml"):
        listed = cluster.mctl("get", "secrets", "-o", fmt).stdout
        assert "db" in listed and "password" in listed and PASSWORD not in listed
    [secret] = json.loads(cluster.mctl("get", "secrets", "-o", "json").stdout)["items"]
    assert secret["keys"] == ["password", "user"]
    # The named volume is recorded with its user; no replica placed it yet.
    volumes = cluster.wait_for("volume record", lambda: json.loads(
        cluster.mctl("get", "volumes", "-o", "json").stdout)["items"])
    assert [(v["metadata"]["name"], v.get("users")) for v in volumes] == [
        ("api-data", ["api"])]
    assert "api-data" in cluster.mctl("get", "volumes").stdout

    # In use: refused, naming the workload; nothing deleted.
    for kind, name in (("secret", "db"), ("config", "app-config"), ("volume", "api-data")):
        refused = cluster.mctl("delete", kind, name, check=False)
        assert refused.returncode == 1
        assert refused.stderr == f"mctl: {kind} default/{name} is used by workload api\n"
    # A reference to nothing: one line naming the field, nothing stored.
    orphan = tmp_path / "orphan.yaml"
    orphan.write_text(MISSING)
    bad = cluster.mctl("apply", "-f", str(orphan), check=False)
    assert bad.returncode == 1
    assert 'spec.volumes[0].config: config "nowhere" does not exist' in bad.stderr
    assert len(bad.stderr.splitlines()) == 1
    assert cluster.mctl("get", "workloads", "orphan", check=False).returncode == 1
    # A bad mount: the CLI says so before anything is sent.
    orphan.write_text(MISSING.replace("/etc/app", "/proc/x"))
    bad = cluster.mctl("apply", "-f", str(orphan), check=False)
    assert bad.returncode == 1 and "spec.volumeMounts[0].mountPath" in bad.stderr

    described = cluster.mctl("describe", "workload", "api").stdout
    assert "data (volume api-data) at /data" in described
    assert "PW from secret db key password" in described and PASSWORD not in described

    # Never in clear: not in etcd's files, not in the scheduler's log.
    assert no_clear_text_under(str(cluster.dir)) == []

    # delete -f: the workload first, then what it used; the volume stays.
    out = cluster.mctl("delete", "-f", str(app)).stdout
    assert set(out.splitlines()) == {"workload/api deleted", "config/app-config deleted",
                                     "secret/db deleted"}
    assert "No secrets found" in cluster.mctl("get", "secrets").stdout
    assert "api-data" in cluster.mctl("get", "volumes").stdout
    assert cluster.mctl("delete", "volume", "api-data").stdout == "volume/api-data deleted\n"
    gone = cluster.mctl("delete", "volume", "api-data", check=False)
    assert gone.returncode == 1 and "volume api-data not found" in gone.stderr

"""Mutual TLS on a real local cluster: who gets in, who is refused, and how it reads.

`cluster up` secures the cluster by default; every other e2e test already
runs through it with the admin certificate it writes into the CLI config.
Here strangers knock: clients without a certificate, with one from another
CA, with a node's certificate, and the CLI when its credentials are wrong.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from conftest import MCTL, Cluster  # noqa: I001 - the e2e fixtures module

from mctl.common import pki, rpc, tls
from mctl.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    control_pb2,
    control_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
)


@pytest.fixture(scope="module")
def secure(cluster_factory: Callable[..., Cluster]) -> Cluster:
    return cluster_factory(2)


@pytest.fixture(scope="module")
def stranger(tmp_path_factory) -> str:
    """Another CA and an admin certificate from it, as the CLI would make them."""
    d = str(tmp_path_factory.mktemp("stranger") / "pki")
    pki.init_ca_dir(d)
    pki.issue_to_dir(d, "admin")
    return d


def pki_dir(c: Cluster) -> str:
    return c.state()["tls"]["dir"]


def creds(c: Cluster, name: str) -> tls.TLSConfig:
    d = pki_dir(c)
    return tls.TLSConfig.from_files(pki.ca_paths(d)[0], *pki.leaf_paths(d, name))


def agent_address(c: Cluster, node: str) -> str:
    items = json.loads(c.mctl("get", "nodes", "-o", "json").stdout)["items"]
    return next(n["address"] for n in items if n["name"] == node)


def list_containers(address: str, credentials: tls.TLSConfig | None, node: str,
                    raw: grpc.ChannelCredentials | None = None) -> agent_pb2.ContainerList:
    if raw is not None:
        channel = grpc.secure_channel(address, raw, options=[
            ("grpc.ssl_target_name_override", pki.node_server_name(node))])
    else:
        channel = rpc.make_channel(address, credentials, pki.node_server_name(node))
    with channel:
        return agent_pb2_grpc.AgentStub(channel).ListContainers(
            agent_pb2.ListContainersRequest(), timeout=5)


def list_nodes(address: str, credentials: tls.TLSConfig | None,
               raw: grpc.ChannelCredentials | None = None) -> control_pb2.NodeList:
    if raw is not None:
        channel = grpc.secure_channel(address, raw, options=[
            ("grpc.ssl_target_name_override", pki.SCHEDULER_SERVER_NAME)])
    else:
        channel = rpc.make_channel(address, credentials, pki.SCHEDULER_SERVER_NAME)
    with channel:
        return control_pb2_grpc.ControlPlaneStub(channel).ListNodes(control_pb2.ListRequest(),
                                                                    timeout=5)


def refused(fn: Callable[..., object], *args: object,
            code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> str:
    with pytest.raises(grpc.RpcError) as info:
        fn(*args)
    assert info.value.code() == code, info.value.details()
    return info.value.details()


def test_cluster_up_secures_everything_by_default(secure: Cluster):
    state = secure.state()
    d = state["tls"]["dir"]
    assert sorted(os.listdir(d)) == sorted(["ca.crt", "ca.key", "admin.crt", "admin.key",
                                            "scheduler.crt", "scheduler.key", "node1.crt",
                                            "node1.key", "node2.crt", "node2.key", "etcd"])
    assert all(os.stat(os.path.join(d, f)).st_mode & 0o077 == 0
               for f in os.listdir(d) if f.endswith(".key"))
    # etcd's own CA: etcd's certificate and the scheduler's client certificate.
    etcd_dir = os.path.join(d, "etcd")
    assert sorted(os.listdir(etcd_dir)) == sorted(["ca.crt", "ca.key", "etcd.crt", "etcd.key",
                                                   "scheduler.crt", "scheduler.key"])
    assert all(os.stat(os.path.join(etcd_dir, f)).st_mode & 0o077 == 0
               for f in os.listdir(etcd_dir) if f.endswith(".key"))
    config = json.loads((secure.home / "config.json").read_text())
    assert config["tls_cert"] == os.path.join(d, "admin.crt") and "insecure" not in config
    for p in state["processes"]:
        if p["name"] != "etcd":
            assert "--tls-cert" in p["argv"] and "--insecure" not in p["argv"]
        else:
            assert "--client-cert-auth" in p["argv"] and "--peer-client-cert-auth" in p["argv"]
    assert f"transport: mutual TLS, certificates in {d}" in secure.mctl("cluster", "status").stdout
    nodes = json.loads(secure.mctl("get", "nodes", "-o", "json").stdout)["items"]
    assert sorted(n["name"] for n in nodes if n.get("ready")) == ["node1", "node2"]


def test_a_client_without_a_certificate_is_refused(secure: Cluster):
    server = secure.state()["server"]
    ca_only = grpc.ssl_channel_credentials(root_certificates=creds(secure, "admin").ca)
    refused(list_nodes, server, None, ca_only)
    refused(list_nodes, server, None)                        # plain text
    for node in ("node1", "node2"):
        address = agent_address(secure, node)
        refused(list_containers, address, None, node, ca_only)
        refused(list_containers, address, None, node)
    # The CLI says so in one line.
    out = secure.mctl("--insecure", "get", "nodes", check=False)
    assert out.returncode == 1
    assert out.stderr == (f"mctl: TLS handshake with {server} failed: the server closed the "
                          "connection; it probably requires mutual TLS: configure --tls-ca, "
                          "--tls-cert and --tls-key\n")


def test_a_certificate_from_another_ca_is_refused(secure: Cluster, stranger: str):
    server = secure.state()["server"]
    # Trusting our CA but presenting theirs: scheduler and agents refuse it.
    cert, key = pki.leaf_paths(stranger, "admin")
    with open(cert, "rb") as c, open(key, "rb") as k:
        raw = grpc.ssl_channel_credentials(root_certificates=creds(secure, "admin").ca,
                                           private_key=k.read(), certificate_chain=c.read())
    refused(list_nodes, server, None, raw)
    refused(list_containers, agent_address(secure, "node1"), None, "node1", raw)
    # The CLI with the stranger's CA and certificate: one line, no traceback.
    out = secure.mctl("--tls-ca", pki.ca_paths(stranger)[0], "--tls-cert", cert, "--tls-key", key,
                      "get", "nodes", check=False)
    assert out.returncode == 1
    assert out.stderr == (f"mctl: TLS handshake with {server} failed: the server's certificate "
                          "is not signed by the cluster CA\n")
    # With our CA but their certificate, the CLI catches it before dialling.
    out = secure.mctl("--tls-cert", cert, "--tls-key", key, "get", "nodes", check=False)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1
    assert f"{cert}: certificate not signed by the cluster CA" in out.stderr


def test_an_agent_certificate_cannot_reach_other_nodes_nor_the_control_plane(secure: Cluster):
    node1 = creds(secure, "node1")
    for node in ("node2", "node1"):
        details = refused(list_containers, agent_address(secure, node), node1, node,
                          code=grpc.StatusCode.PERMISSION_DENIED)
        assert details == ("permission denied: agent node1 may not call "
                           "/mctl.v1.Agent/ListContainers (only role admin or scheduler may)")
    server = secure.state()["server"]
    details = refused(list_nodes, server, node1, code=grpc.StatusCode.PERMISSION_DENIED)
    assert "agent node1 may not call /mctl.v1.ControlPlane/ListNodes" in details
    # Nor speak for another node to the scheduler.
    with rpc.make_channel(server, node1, pki.SCHEDULER_SERVER_NAME) as channel:
        stub = node_pb2_grpc.NodeServiceStub(channel)
        details = refused(stub.Heartbeat, node_pb2.HeartbeatRequest(node="node2"),
                          code=grpc.StatusCode.PERMISSION_DENIED)
        assert details.endswith("/mctl.v1.NodeService/Heartbeat for node2")
    # The CLI with a node's certificate: one line naming the refusal.
    d = pki_dir(secure)
    out = secure.mctl("--tls-cert", f"{d}/node1.crt", "--tls-key", f"{d}/node1.key",
                      "get", "nodes", check=False)
    assert out.returncode == 1
    assert out.stderr.startswith("mctl: permission denied: agent node1 may not call")
    # node2 is still Ready: its own heartbeats were never disturbed.
    nodes = json.loads(secure.mctl("get", "nodes", "-o", "json").stdout)["items"]
    assert all(n.get("ready") for n in nodes)


def test_an_admin_certificate_reaches_scheduler_and_every_agent(secure: Cluster):
    admin = creds(secure, "admin")
    assert len(list_nodes(secure.state()["server"], admin).items) == 2
    for node in ("node1", "node2"):
        assert list_containers(agent_address(secure, node), admin, node) is not None
    # An agent only answers to its own name: node1 is not node2 whatever the address.
    details = refused(list_containers, agent_address(secure, "node1"), admin, "node2")
    assert "Hostname Verification" in details or "Peer name" in details


def test_an_insecure_cluster_is_explicit(cluster_factory: Callable[..., Cluster],
                                         tmp_path: Path):
    c = cluster_factory(1, "--insecure")
    assert "tls" not in c.state() and not (c.dir / "pki").exists()
    assert json.loads((c.home / "config.json").read_text())["insecure"] == "true"
    assert "node1" in c.mctl("get", "nodes").stdout
    assert "transport: INSECURE" in c.mctl("cluster", "status").stdout
    # A TLS client is told the server does not speak TLS.
    other = str(tmp_path / "pki")
    pki.init_ca_dir(other)
    cert, key = pki.issue_to_dir(other, "admin")
    out = c.mctl("--tls-ca", pki.ca_paths(other)[0], "--tls-cert", cert, "--tls-key", key,
                 "get", "nodes", check=False)
    assert out.returncode == 1
    assert out.stderr == (f"mctl: TLS handshake with {c.state()['server']} failed: the server "
                          "does not speak TLS (an insecure cluster? then pass --insecure)\n")


def test_without_credentials_or_server_the_cli_says_which_in_one_line(secure: Cluster,
                                                                     tmp_path: Path):
    env = {**os.environ, "MCTL_HOME": str(tmp_path)}
    for var in ("MCTL_TLS_CA", "MCTL_TLS_CERT", "MCTL_TLS_KEY", "MCTL_INSECURE"):
        env.pop(var, None)
    proc = subprocess.run(MCTL + ["--server", "127.0.0.1:1", "get", "nodes"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr == (
        "mctl: no TLS credentials for the mctl server at 127.0.0.1:1: give --tls-ca, "
        f"--tls-cert and --tls-key or set tls_ca, tls_cert and tls_key in {tmp_path}/config.json "
        "(`mctl cluster up` does), or --insecure for a plain-text cluster\n")
    # With credentials, a server that is not there is not a TLS problem.
    d = pki_dir(secure)
    proc = subprocess.run(MCTL + ["--server", "127.0.0.1:1", "--tls-ca", f"{d}/ca.crt",
                                  "--tls-cert", f"{d}/admin.crt", "--tls-key", f"{d}/admin.key",
                                  "get", "nodes"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr == "mctl: cannot reach the mctl server at 127.0.0.1:1\n"

"""Mutual TLS and authorization on real gRPC servers on loopback (no root, no cluster).

The services behind the servers are small test servicers: what is under test
is rpc.py's transport, authz.py's interceptor and the real access policies of
the scheduler and the agent.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from mctl.agent.access import POLICY as AGENT_POLICY
from mctl.common import pki, rpc, tls
from mctl.common.authz import Authorizer
from mctl.scheduler.access import POLICY as SCHEDULER_POLICY
from mctl.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    control_pb2,
    control_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
    types_pb2,
)


class Agent(agent_pb2_grpc.AgentServicer):
    def ListContainers(self, request, context):
        return agent_pb2.ContainerList()

    def Logs(self, request, context):
        yield control_pb2.LogChunk(lines=[control_pb2.LogLine(data=b"hello")])

    def Exec(self, request_iterator, context):
        for message in request_iterator:
            yield control_pb2.ExecOutput(stdout=message.stdin)

    def ImportImage(self, request_iterator, context):
        return agent_pb2.ImportImageReply(received_bytes=sum(len(c.data) for c in request_iterator))


class Nodes(node_pb2_grpc.NodeServiceServicer):
    def Register(self, request, context):
        return node_pb2.RegisterResponse(heartbeat_interval_ms=1)

    def Heartbeat(self, request, context):
        return node_pb2.HeartbeatResponse()

    def ReportStatus(self, request, context):
        return node_pb2.StatusAck()


class Control(control_pb2_grpc.ControlPlaneServicer):
    def ListNodes(self, request, context):
        return control_pb2.NodeList()


class Certs:
    """A cluster's worth of credentials in files, and a stranger's."""

    def __init__(self, directory) -> None:
        self.dir = str(directory / "pki")
        pki.init_ca_dir(self.dir)
        for role, name in (("scheduler", ""), ("admin", ""), ("agent", "node1"),
                           ("agent", "node2")):
            pki.issue_to_dir(self.dir, role, name)
        self.other = str(directory / "other")
        pki.init_ca_dir(self.other)
        pki.issue_to_dir(self.other, "admin")
        pki.issue_to_dir(self.other, "scheduler")

    def config(self, name: str, ca_dir: str = "", cert_dir: str = "") -> tls.TLSConfig:
        cert, key = pki.leaf_paths(cert_dir or self.dir, name)
        return tls.TLSConfig.from_files(pki.ca_paths(ca_dir or self.dir)[0], cert, key)

    def unchecked(self, name: str, ca_dir: str, cert_dir: str) -> tls.TLSConfig:
        """Credentials as a misconfigured client holds them, past from_files' checks."""
        cert, key = pki.leaf_paths(cert_dir, name)
        return tls.TLSConfig(ca=pki.read_file(pki.ca_paths(ca_dir)[0], "ca"),
                             cert=pki.read_file(cert, "cert"), key=pki.read_file(key, "key"),
                             identity=pki.Identity("admin", name))


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return Certs(tmp_path_factory.mktemp("tls"))


def serve(server_tls: tls.TLSConfig | None, policy: dict | None) -> tuple[grpc.Server, str]:
    server = rpc.make_server(max_workers=4,
                             interceptors=[Authorizer(policy)] if policy is not None else [])
    agent_pb2_grpc.add_AgentServicer_to_server(Agent(), server)
    node_pb2_grpc.add_NodeServiceServicer_to_server(Nodes(), server)
    control_pb2_grpc.add_ControlPlaneServicer_to_server(Control(), server)
    port = rpc.bind(server, "127.0.0.1:0", server_tls)
    server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def agent_node1(certs) -> Iterator[str]:
    server, address = serve(certs.config("node1"), AGENT_POLICY)
    yield address
    server.stop(None)


@pytest.fixture(scope="module")
def scheduler(certs) -> Iterator[str]:
    server, address = serve(certs.config("scheduler"), SCHEDULER_POLICY)
    yield address
    server.stop(None)


def list_containers(address: str, creds: tls.TLSConfig | None,
                    name: str = "node1.node.mctl") -> agent_pb2.ContainerList:
    with rpc.make_channel(address, creds, name) as channel:
        return agent_pb2_grpc.AgentStub(channel).ListContainers(
            agent_pb2.ListContainersRequest(), timeout=5)


def failure(fn, *args) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn(*args)
    return info.value


def test_admin_and_scheduler_may_call_an_agent(certs, agent_node1):
    assert list_containers(agent_node1, certs.config("admin")) == agent_pb2.ContainerList()
    assert list_containers(agent_node1, certs.config("scheduler")) == agent_pb2.ContainerList()
    with rpc.make_channel(agent_node1, certs.config("admin"), "node1.node.mctl") as channel:
        chunks = list(agent_pb2_grpc.AgentStub(channel).Logs(control_pb2.LogsRequest(),
                                                             timeout=5))
    assert chunks[0].lines[0].data == b"hello"


def test_agents_may_not_call_an_agent_not_even_their_own(certs, agent_node1):
    for name in ("node2", "node1"):
        e = failure(list_containers, agent_node1, certs.config(name))
        assert e.code() == grpc.StatusCode.PERMISSION_DENIED
        assert e.details() == (f"permission denied: agent {name} may not call "
                               "/mctl.v1.Agent/ListContainers (only role admin or scheduler may)")
    # Streaming methods are guarded the same way.
    with rpc.make_channel(agent_node1, certs.config("node2"), "node1.node.mctl") as channel:
        e = failure(lambda: list(agent_pb2_grpc.AgentStub(channel).Logs(
            control_pb2.LogsRequest(), timeout=5)))
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED


def test_streamed_requests_are_guarded_before_the_first_is_read(certs, agent_node1):
    def exec_echo(who: str) -> list[bytes]:
        with rpc.make_channel(agent_node1, certs.config(who), "node1.node.mctl") as channel:
            replies = agent_pb2_grpc.AgentStub(channel).Exec(
                iter([control_pb2.ExecInput(stdin=b"a"), control_pb2.ExecInput(stdin=b"b")]),
                timeout=5)
            return [r.stdout for r in replies]

    def import_image(who: str) -> int:
        with rpc.make_channel(agent_node1, certs.config(who), "node1.node.mctl") as channel:
            return agent_pb2_grpc.AgentStub(channel).ImportImage(
                iter([agent_pb2.ImageChunk(data=b"abc"), agent_pb2.ImageChunk(data=b"de")]),
                timeout=5).received_bytes

    assert exec_echo("admin") == [b"a", b"b"]                  # stream -> stream
    assert import_image("admin") == 5                          # stream -> one reply
    for call, method in ((exec_echo, "Exec"), (import_image, "ImportImage")):
        e = failure(call, "node1")
        assert e.code() == grpc.StatusCode.PERMISSION_DENIED
        assert e.details() == (f"permission denied: agent node1 may not call "
                               f"/mctl.v1.Agent/{method} (only role admin or scheduler may)")


def test_a_client_without_a_certificate_is_refused(certs, agent_node1):
    no_cert = grpc.ssl_channel_credentials(root_certificates=certs.config("admin").ca)
    with grpc.secure_channel(agent_node1, no_cert, options=[
            ("grpc.ssl_target_name_override", "node1.node.mctl")]) as channel:
        e = failure(agent_pb2_grpc.AgentStub(channel).ListContainers,
                    agent_pb2.ListContainersRequest())
    assert e.code() == grpc.StatusCode.UNAVAILABLE
    assert "refused this client's certificate" in tls.explain_failure(e.details(), True)
    e = failure(list_containers, agent_node1, None)
    assert e.code() == grpc.StatusCode.UNAVAILABLE
    assert "requires mutual TLS" in tls.explain_failure(e.details(), False)


def test_a_certificate_from_another_ca_is_refused_both_ways(certs, agent_node1):
    # Our CA trusted, their certificate presented: the server refuses it.
    stranger = certs.unchecked("admin", certs.dir, certs.other)
    e = failure(list_containers, agent_node1, stranger)
    assert e.code() == grpc.StatusCode.UNAVAILABLE
    assert "refused this client's certificate" in tls.explain_failure(e.details(), True)
    # Their CA trusted: the client refuses our server.
    e = failure(list_containers, agent_node1, certs.config("admin", certs.other, certs.other))
    assert tls.explain_failure(e.details(), True) == \
        "the server's certificate is not signed by the cluster CA"


def test_servers_are_verified_by_name_not_address(certs, agent_node1, scheduler):
    admin = certs.config("admin")
    # node1's agent is not node2, nor the scheduler, whatever address was dialled.
    for name in ("node2.node.mctl", pki.SCHEDULER_SERVER_NAME):
        e = failure(list_containers, agent_node1, admin, name)
        assert tls.explain_failure(e.details(), True) == \
            "the server's certificate is not for the name this client verifies"
    with rpc.make_channel(scheduler, admin, pki.SCHEDULER_SERVER_NAME) as channel:
        control_pb2_grpc.ControlPlaneStub(channel).ListNodes(control_pb2.ListRequest(), timeout=5)


def heartbeat(address: str, creds: tls.TLSConfig, node: str) -> node_pb2.HeartbeatResponse:
    with rpc.make_channel(address, creds, pki.SCHEDULER_SERVER_NAME) as channel:
        return node_pb2_grpc.NodeServiceStub(channel).Heartbeat(
            node_pb2.HeartbeatRequest(node=node), timeout=5)


def test_scheduler_node_api_is_for_each_agent_about_itself(certs, scheduler):
    node1 = certs.config("node1")
    heartbeat(scheduler, node1, "node1")
    with rpc.make_channel(scheduler, node1, pki.SCHEDULER_SERVER_NAME) as channel:
        stub = node_pb2_grpc.NodeServiceStub(channel)
        stub.Register(node_pb2.RegisterRequest(node=types_pb2.Node(name="node1")), timeout=5)
        stub.ReportStatus(node_pb2.StatusReport(node="node1"), timeout=5)
        for call, request in (
                (stub.Heartbeat, node_pb2.HeartbeatRequest(node="node2")),
                (stub.Register, node_pb2.RegisterRequest(node=types_pb2.Node(name="node2"))),
                (stub.ReportStatus, node_pb2.StatusReport(node="node2"))):
            e = failure(call, request)
            assert e.code() == grpc.StatusCode.PERMISSION_DENIED
            assert e.details().startswith("permission denied: agent node1 may not call "
                                          "/mctl.v1.NodeService/")
            assert e.details().endswith(" for node2")
    for who in ("admin", "scheduler"):
        e = failure(heartbeat, scheduler, certs.config(who), who)
        assert e.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "(only role agent may)" in e.details()


def test_scheduler_control_plane_is_for_admins_only(certs, scheduler):
    for who in ("node1", "scheduler"):
        with rpc.make_channel(scheduler, certs.config(who), pki.SCHEDULER_SERVER_NAME) as channel:
            e = failure(control_pb2_grpc.ControlPlaneStub(channel).ListNodes,
                        control_pb2.ListRequest())
        assert e.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "/mctl.v1.ControlPlane/ListNodes (only role admin may)" in e.details()


def test_services_without_a_rule_are_refused(certs):
    server, address = serve(certs.config("node1"), {})
    try:
        e = failure(list_containers, address, certs.config("admin"))
        assert e.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "mctl.v1.Agent has no authorization rule" in e.details()
    finally:
        server.stop(None)


def test_plain_text_server_and_tls_client_do_not_mix(certs):
    server, address = serve(None, None)
    try:
        assert list_containers(address, None) == agent_pb2.ContainerList()
        e = failure(list_containers, address, certs.config("admin"))
        assert tls.explain_failure(e.details(), True).startswith("the server does not speak TLS")
    finally:
        server.stop(None)


# -- credentials from files and flags ---------------------------------------------


def test_credentials_are_checked_when_loaded(certs):
    ca = pki.ca_paths(certs.dir)[0]
    n1, n1_key = pki.leaf_paths(certs.dir, "node1")
    _, n2_key = pki.leaf_paths(certs.dir, "node2")
    stranger, stranger_key = pki.leaf_paths(certs.other, "admin")
    with pytest.raises(tls.TLSError, match="node2.key: this key does not belong to the cert"):
        tls.TLSConfig.from_files(ca, n1, n2_key)
    with pytest.raises(tls.TLSError, match="admin.crt: certificate not signed by the cluster CA"):
        tls.TLSConfig.from_files(ca, stranger, stranger_key)
    with pytest.raises(tls.TLSError, match="missing.crt: cannot read the certificate"):
        tls.TLSConfig.from_files(ca, n1 + "missing.crt", n1_key)
    node1 = tls.TLSConfig.from_files(ca, n1, n1_key)
    node1.require("agent", "node1")
    with pytest.raises(tls.TLSError, match="a certificate for agent node1, but this is agent n9"):
        node1.require("agent", "n9")
    with pytest.raises(tls.TLSError, match="a certificate for role agent, but this process "
                                           "needs role scheduler"):
        node1.require("scheduler")


def test_flags_are_all_three_or_explicitly_insecure(certs):
    ca = pki.ca_paths(certs.dir)[0]
    cert, key = pki.leaf_paths(certs.dir, "admin")
    assert tls.from_flags("", "", "", insecure=True) is None
    assert tls.from_flags(ca, cert, key, insecure=False).identity == pki.Identity("admin", "admin")
    with pytest.raises(tls.TLSError, match="no transport security configured"):
        tls.from_flags("", "", "", insecure=False)
    with pytest.raises(tls.TLSError, match="--tls-key missing"):
        tls.from_flags(ca, cert, "", insecure=False)
    with pytest.raises(tls.TLSError, match="contradict"):
        tls.from_flags(ca, cert, key, insecure=True)

"""The node loop's /etc/hosts sync: one peer list per workload, kept while unchanged.

Every second the loop hands each container its workload's peer list;
ContainerManager.update_hosts skips a container at once when it gets the
very list it wrote last (identity), so the loop must reuse the list object
while the peers stay the same, and hand a new one as soon as they change.
"""

from __future__ import annotations

from types import SimpleNamespace

from mctl.agent.node import NodeLoop
from mctl.v1 import agent_pb2


class FakeManager:
    def __init__(self, containers: list[SimpleNamespace]) -> None:
        self.network = SimpleNamespace(ready=True, sync_routes=lambda nodes: None)
        self.containers = containers
        self.calls: list[tuple[str, tuple]] = []

    def snapshot(self) -> list[SimpleNamespace]:
        return list(self.containers)

    def update_hosts(self, c: SimpleNamespace, peers: tuple) -> bool:
        self.calls.append((c.id, peers))
        return False


def container(name: str, workload: str, ip: str) -> SimpleNamespace:
    replica = SimpleNamespace(metadata=SimpleNamespace(namespace="default", name=name),
                              workload=workload)
    return SimpleNamespace(id=f"default_{name}", replica=replica, ip=ip, network=object(),
                           busy=False)


def peer(name: str, ip: str, workload: str) -> agent_pb2.ReplicaAddress:
    return agent_pb2.ReplicaAddress(namespace="default", workload=workload, name=name, ip=ip)


def test_the_peer_list_is_one_object_per_workload_while_unchanged():
    manager = FakeManager([container("web-a", "web", "10.0.0.2"),
                           container("web-b", "web", "10.0.0.3"),
                           container("db-a", "db", "10.0.0.4")])
    loop = NodeLoop(manager, None, lambda report: None, "n1", 1.0)  # type: ignore[arg-type]
    loop.set_network([], [peer("web-c", "10.0.1.2", "web")])

    loop._sync_network()
    first = dict(manager.calls)
    assert first["default_web-a"] == (("web-a", "10.0.0.2"), ("web-b", "10.0.0.3"),
                                      ("web-c", "10.0.1.2"))
    assert first["default_web-a"] is first["default_web-b"]
    assert first["default_db-a"] == (("db-a", "10.0.0.4"),)

    manager.calls.clear()
    loop._sync_network()
    second = dict(manager.calls)
    assert all(second[cid] is first[cid] for cid in first)

    manager.calls.clear()
    loop.set_network([], [peer("web-c", "10.0.1.9", "web")])  # web-c moved
    loop._sync_network()
    third = dict(manager.calls)
    assert ("web-c", "10.0.1.9") in third["default_web-a"]
    assert third["default_web-a"] is not first["default_web-a"]
    assert third["default_db-a"] is first["default_db-a"]

"""The agent's side of registry pulls: the pull secret it hands over, the progress and
image digests it reports, and how `describe replica` shows a pull."""

from __future__ import annotations

import base64
import json
import types

from mctl.agent import node as node_module
from mctl.agent.images.pull import Progress
from mctl.agent.images.userslock import UsersLock
from mctl.agent.node import NodeLoop
from mctl.agent.volumes import Sources
from mctl.cli.describe import pull_line
from mctl.v1 import types_pb2

REG = "registry.local:5000"
DIGEST = "sha256:" + "ab" * 32


class FakePuller:
    def __init__(self) -> None:
        self.asked: list[tuple[str, bytes | None]] = []
        self.now = Progress(False, 0, 0, 0)

    def wait_for(self, ref: str, auth: bytes | None = None) -> tuple[bool, str] | None:
        self.asked.append((ref, auth))
        return False, f"pulling image {ref}"

    def progress(self, ref: str) -> Progress | None:
        return self.now

    def retain(self, refs: object) -> None:
        pass


def replica(secret: str = "") -> types_pb2.Replica:
    r = types_pb2.Replica(spec_hash="h", workload="web")
    r.metadata.namespace, r.metadata.name, r.metadata.uid = "default", "web-1", "u1"
    r.spec.image, r.spec.image_digest = f"{REG}/team/app:1", DIGEST
    r.spec.image_pull_secret = secret
    return r


def loop_with(secrets: list[types_pb2.Secret]) -> tuple[NodeLoop, FakePuller]:
    """A loop whose desired sets carry `secrets` (as the scheduler sends them)."""
    images = types.SimpleNamespace(pinned_digests=lambda limit: [DIGEST])
    manager = types.SimpleNamespace(sources=Sources.of([], []), images=images,
                                    snapshot=lambda: [],
                                    volumes=types.SimpleNamespace(latest_usage=lambda: {}))
    loop = NodeLoop(manager, None, lambda report: None, "n1", 1.0)  # type: ignore[arg-type]
    puller = FakePuller()
    loop.puller = puller  # type: ignore[assignment]
    plain = loop.set_desired
    loop.set_desired = lambda rev, reps: plain(rev, reps, secrets=secrets)  # type: ignore
    return loop, puller


def secret(name: str, **data: bytes) -> types_pb2.Secret:
    s = types_pb2.Secret(data=data)
    s.metadata.namespace, s.metadata.name = "default", name
    return s


def test_the_pull_gets_the_secrets_credentials_for_the_images_registry():
    loop, puller = loop_with([secret("reg", username=b"bob", password=b"pw")])
    r = replica("reg")
    loop.set_desired(1, [r])
    loop._create(r, now=0)
    (ref, auth), = puller.asked
    assert ref == f"{REG}/team/app:1@{DIGEST}" and auth is not None
    token = json.loads(auth)["auths"][REG]["auth"]
    assert base64.b64decode(token) == b"bob:pw"


def test_no_secret_means_the_nodes_own_credentials():
    loop, puller = loop_with([])
    r = replica()
    loop.set_desired(1, [r])
    loop._create(r, now=0)
    assert puller.asked == [(f"{REG}/team/app:1@{DIGEST}", None)]


def test_a_missing_or_unusable_secret_keeps_the_replica_waiting_with_the_reason():
    loop, puller = loop_with([secret("half", username=b"bob")])
    for name, why in (("gone", "imagePullSecret gone: secret 'gone' not found in namespace "
                               "'default'"),
                      ("half", "imagePullSecret half: needs keys username and password, or "
                               ".dockerconfigjson; it has username")):
        r = replica(name)
        loop.set_desired(1, [r])
        loop._create(r, now=0)
        report = loop.build_report()
        (rep,) = report.replicas
        assert rep.status.phase == types_pb2.REPLICA_PHASE_PENDING
        assert rep.status.reason == types_pb2.REPLICA_REASON_IMAGE_PULL_ERROR
        assert rep.status.message == why
    assert puller.asked == []


def test_progress_is_reported_every_few_seconds_with_the_nodes_digests():
    loop, puller = loop_with([])
    r = replica()
    loop.set_desired(1, [r])
    loop._create(r, now=0)
    puller.now = Progress(False, 1000, 5000, 500)
    first = loop.build_report()
    assert list(first.image_digests) == [DIGEST]
    pull = first.replicas[0].status.image_pull
    assert (pull.done, pull.bytes, pull.total_bytes, pull.elapsed_ms) == (False, 1000, 5000, 500)
    # Within the same few seconds: the report is unchanged (nothing is sent).
    puller.now = Progress(False, 3000, 5000, 1500)
    assert loop.build_report() == first
    step = int(node_module.PULL_REPORT_SECONDS * 1000)
    puller.now = Progress(False, 4000, 5000, step + 10)
    assert loop.build_report().replicas[0].status.image_pull.bytes == 4000


def test_describe_shows_pulling_and_pulled():
    mi = 1 << 20
    assert pull_line(types_pb2.ImagePullProgress(bytes=12 * mi, total_bytes=30 * mi,
                                                 elapsed_ms=4200)) == "pulling 12Mi of 30Mi, 4s"
    assert pull_line(types_pb2.ImagePullProgress(bytes=mi, elapsed_ms=900)) == "pulling 1Mi, 1s"
    assert pull_line(types_pb2.ImagePullProgress(done=True, bytes=30 * mi, total_bytes=30 * mi,
                                                 elapsed_ms=5230)) == "pulled 30Mi in 5.2s"


def test_no_container_is_made_while_image_rm_or_gc_decides():
    import threading
    import time

    lock = UsersLock()
    made: list[float] = []
    images = types.SimpleNamespace(users_lock=lock, touch=lambda ref: None,
                                   pinned_digests=lambda limit: [])

    def create(replica: types_pb2.Replica) -> object:
        made.append(time.monotonic())
        raise node_module.ContainerError("stop here")
    manager = types.SimpleNamespace(sources=Sources.of([], []), images=images, create=create)
    loop = NodeLoop(manager, None, lambda report: None, "n1", 1.0)  # type: ignore[arg-type]
    r = replica()
    r.spec.image = "busybox"          # nothing to pull
    loop.set_desired(1, [r])
    released = []
    with lock:
        # What the start pool runs for the replica (node.py's _make).
        worker = threading.Thread(target=loop._make, args=(r,))
        worker.start()
        time.sleep(0.2)
        assert made == []             # waits while the lock is held
        released.append(time.monotonic())
    worker.join(5)
    assert len(made) == 1 and made[0] >= released[0]

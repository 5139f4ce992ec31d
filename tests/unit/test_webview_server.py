"""The web view's pieces on loopback: the sample rings, the view, token and certificate access,
the event stream (scheduler/web/). The page in a real browser: tests/e2e/test_webview.py."""

from __future__ import annotations

import http.client
import os
import ssl
import stat
import threading
import time
from pathlib import Path

import pytest

from mctl.common import pki
from mctl.scheduler.store import Snapshot
from mctl.scheduler.usage import UsageCache
from mctl.scheduler.web import access, feed
from mctl.scheduler.web.server import MAX_CONNECTIONS, WebTLS, WebView
from mctl.v1 import types_pb2

TOKEN = "t0ken-of-the-test-cluster-xyz"


class SnapshotSource:
    """Stands in for StateCache: a fixed snapshot, and the history hook it calls."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.on_history = None

    def snapshot(self, min_revision: int = 0) -> Snapshot:
        return self.snap.copy()


def cluster_snapshot() -> Snapshot:
    snap = Snapshot(revision=42, leader="scheduler")
    for name in ("node1", "node2"):
        snap.nodes[name] = types_pb2.Node(name=name, address=f"10.0.0.{name[-1]}:7071",
                                          capacity=types_pb2.Resources(cpu_millis=2000,
                                                                       memory_bytes=2 << 30))
    snap.heartbeats.add("node1")
    w = types_pb2.Workload(metadata=types_pb2.ObjectMeta(namespace="default", name="web"))
    w.spec.replicas = 2
    w.spec.image = "busybox"
    snap.workloads[("default", "web")] = w
    for i, node in enumerate(("node1", "node2")):
        r = types_pb2.Replica(metadata=types_pb2.ObjectMeta(namespace="default",
                                                            name=f"web-{i}"),
                              workload="web", node=node)
        r.spec.resources.cpu_millis = 100
        r.status.phase = types_pb2.REPLICA_PHASE_RUNNING
        r.status.ip = f"10.44.0.{i + 2}"
        r.status.restarts = i
        snap.replicas[("default", f"web-{i}")] = r
    return snap


def test_history_ring_wraps_keeps_gaps_and_drops_what_is_gone():
    h = feed.UsageHistory(points=3, max_series=2)
    h.record(1000, {"a": (1, 10), "b": None, "c": (3, 30)})
    assert h.keys() == ["a", "c"]            # b had no sample yet: no series
    h.record(2000, {"a": None, "c": (4, 40), "d": (5, 50)})
    assert "d" not in h.keys()               # at most max_series
    h.record(3000, {"a": (2, 20), "c": (5, 50)})
    h.record(4000, {"a": (3, 30)})           # c is gone
    assert h.series("a") == [[3000, 2, 20], [4000, 3, 30]]  # 1000 fell out; 2000 a gap
    assert h.series("c") == []
    assert h.latest() == {"t": 4000, "values": {"a": [3, 30]}}


def test_view_shows_capacity_use_and_replicas_and_no_usage_of_a_silent_node():
    snap = cluster_snapshot()
    usage = UsageCache()
    usage.set_node("node1", types_pb2.Usage(cpu_cores=0.25, memory_bytes=100))
    usage.set_node("node2", types_pb2.Usage(cpu_cores=0.5, memory_bytes=200))
    usage.set_replica(("default", "web-0"), types_pb2.Usage(cpu_cores=0.01, memory_bytes=7))
    v = feed.view(snap, usage, [], "scheduler", True)
    n1, n2 = v["nodes"]
    assert (n1["ready"], n1["usage"], n1["allocated"]["cpu"], n1["capacity"]["cpu"]) == (
        True, {"cpu": 250, "memory": 100}, 100, 2000)
    assert (n2["ready"], n2["usage"]) == (False, None)     # not heartbeating: no "now"
    (w,) = v["workloads"]
    assert [(r["name"], r["phase"], r["node"], r["ip"], r["restarts"]) for r in w["replicas"]] \
        == [("web-0", "Running", "node1", "10.44.0.2", 0),
            ("web-1", "Running", "node2", "10.44.0.3", 1)]
    assert w["replicas"][0]["usage"] == {"cpu": 10, "memory": 7}
    values = feed.usage_values(snap, usage)
    assert values["node:node2"] is None and values["replica:default/web-1"] is None


@pytest.fixture
def web():
    usage = UsageCache()
    usage.set_node("node1", types_pb2.Usage(cpu_cores=0.25, memory_bytes=100))
    source = SnapshotSource(cluster_snapshot())
    f = feed.Feed(source, usage, "scheduler", lambda: True)   # type: ignore[arg-type]
    view = WebView("127.0.0.1:0", f, TOKEN, None)
    view.start()
    yield view, source
    view.close()


def get(port: int, path: str, headers: dict[str, str] | None = None,
        context: ssl.SSLContext | None = None) -> http.client.HTTPResponse:
    conn: http.client.HTTPConnection = (
        http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
        if context else http.client.HTTPConnection("127.0.0.1", port, timeout=5))
    conn.request("GET", path, headers=headers or {})
    return conn.getresponse()


def test_token_in_the_address_sets_an_httponly_cookie_and_redirects(web):
    view, _ = web
    assert get(view.port, "/").status == 401
    assert get(view.port, "/app.js").status == 401
    assert get(view.port, "/events").status == 401
    assert get(view.port, "/?token=wrong").status == 403
    r = get(view.port, f"/?token={TOKEN}")
    assert r.status == 303 and r.getheader("Location") == "/"
    cookie = r.getheader("Set-Cookie")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    pair = cookie.split(";")[0]
    page = get(view.port, "/", {"Cookie": pair})
    assert page.status == 200 and b"<title>mctl</title>" in page.read()
    assert "default-src 'self'" in page.getheader("Content-Security-Policy")
    assert get(view.port, "/", {"Cookie": pair + "x"}).status == 401
    assert get(view.port, "/app.js", {"Authorization": f"Bearer {TOKEN}"}).status == 200
    assert get(view.port, "/../feed.py", {"Authorization": f"Bearer {TOKEN}"}).status == 404


def read_events(response: http.client.HTTPResponse, names: set[str],
                timeout: float = 15) -> dict[str, str]:
    found: dict[str, str] = {}
    name = ""
    deadline = time.monotonic() + timeout
    while not names <= found.keys() and time.monotonic() < deadline:
        line = response.fp.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            found[name] = line[len("data: "):]
    return found


def test_the_stream_sends_state_then_history_and_events_from_the_cache_hook(web):
    view, source = web
    r = get(view.port, "/events", {"Authorization": f"Bearer {TOKEN}"})
    assert r.status == 200 and r.getheader("Content-Type") == "text/event-stream"
    got = read_events(r, {"state", "history"})
    assert '"name":"node1"' in got["state"] and '"web-1"' in got["state"]
    assert '"node:node1":[[' in got["history"]
    # An event the watch brings shows in the next state.
    e = types_pb2.Event(unix_ms=int(time.time() * 1000), kind="Replica", namespace="default",
                        name="web-2", type="Normal", reason="Scheduled", message="to node1")
    source.on_history(e.SerializeToString())
    source.snap.replicas[("default", "web-2")] = types_pb2.Replica(
        metadata=types_pb2.ObjectMeta(namespace="default", name="web-2"), workload="web")
    got = read_events(r, {"state"})
    assert '"reason":"Scheduled"' in got["state"] and '"web-2"' in got["state"]
    r.close()


def test_streams_and_connections_are_bounded(web):
    view, _ = web
    streams = [get(view.port, "/events", {"Authorization": f"Bearer {TOKEN}"})
               for _ in range(feed.Feed.MAX_STREAMS)]
    assert all(s.status == 200 for s in streams)
    assert get(view.port, "/events", {"Authorization": f"Bearer {TOKEN}"}).status == 503
    for s in streams:
        s.close()
    # Idle connections past the bound are refused at once, not queued behind the others.
    import socket
    held = [socket.create_connection(("127.0.0.1", view.port)) for _ in range(MAX_CONNECTIONS)]
    time.sleep(0.3)
    extra = socket.create_connection(("127.0.0.1", view.port))
    extra.settimeout(5)
    assert extra.recv(100).startswith(b"HTTP/1.1 503")
    for s in held + [extra]:
        s.close()


def test_an_admin_certificate_needs_no_token_and_others_do(tmp_path: Path):
    ca = pki.init_ca_dir(str(tmp_path))
    cert, key = pki.issue_to_dir(str(tmp_path), "scheduler", "scheduler", ("127.0.0.1",))
    admin = pki.issue_to_dir(str(tmp_path), "admin", "alice")
    agent = pki.issue_to_dir(str(tmp_path), "agent", "node1")
    source = SnapshotSource(cluster_snapshot())
    f = feed.Feed(source, UsageCache(), "scheduler", lambda: False)   # type: ignore[arg-type]
    view = WebView("127.0.0.1:0", f, TOKEN, WebTLS(ca.cert_pem, cert, key))
    view.start()
    try:
        def client(pair: tuple[str, str]) -> ssl.SSLContext:
            ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
            ctx.check_hostname = False
            ctx.load_cert_chain(*pair)
            return ctx
        assert get(view.port, "/", context=client(admin)).status == 200
        assert get(view.port, "/", context=client(agent)).status == 401
        assert get(view.port, "/", {"Authorization": f"Bearer {TOKEN}"},
                   context=client(agent)).status == 200
        assert get(view.port, "/", {"Authorization": f"Bearer {TOKEN}"}).status == 200  # plain
    finally:
        view.close()


def test_token_files_must_be_private_and_hold_a_token(tmp_path: Path):
    path = str(tmp_path / "web.token")
    token = access.write_token_file(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert access.read_token_file(path) == token == access.write_token_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(access.WebAccessError, match="0600"):
        access.read_token_file(path)
    os.chmod(path, 0o600)
    Path(path).write_text("short\n")
    with pytest.raises(access.WebAccessError, match="not a token"):
        access.read_token_file(path)
    with pytest.raises(access.WebAccessError, match="--web-listen"):
        access.parse_address("7080")
    assert not access.token_matches("", TOKEN) and not access.token_matches(TOKEN, None)


def test_closing_ends_open_streams(web):
    view, _ = web
    r = get(view.port, "/events", {"Authorization": f"Bearer {TOKEN}"})
    read_events(r, {"state"})
    done = threading.Event()

    def drain() -> None:
        while r.fp.readline():
            pass
        done.set()
    threading.Thread(target=drain, daemon=True).start()
    view.feed.close()
    view._server.feed_stopped.set()
    assert done.wait(15)


@pytest.mark.parametrize("flags, says", [
    (["--web-listen", "127.0.0.1:0"],
     "--web-listen needs --web-token-file or TLS credentials: the view is for admins only"),
    (["--web-listen", "7080"], "--web-listen '7080': must be host:port, e.g. 127.0.0.1:7080"),
    (["--web-listen", "127.0.0.1:0", "--web-token-file", "/nonexistent/web.token"],
     "--web-token-file /nonexistent/web.token: No such file or directory"),
])
def test_the_scheduler_refuses_web_flags_it_cannot_use_in_one_line(flags, says, capsys):
    import logging

    from mctl.scheduler import main as scheduler_main
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with pytest.raises(SystemExit) as stopped:
            scheduler_main.main(["--insecure", "--log-level", "ERROR", *flags])
    finally:    # main() configured the process's logging; later tests need theirs back
        root.handlers[:], root.level = handlers, level
    assert stopped.value.code == 2
    assert capsys.readouterr().err == f"mctl-scheduler: {says}\n"

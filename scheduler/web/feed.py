"""What the web view shows, and the live feed that keeps open pages current.

Everything comes from what the scheduler already holds in memory, so an
open page costs no etcd read:

- the cluster state from the watch cache (cache.py): nodes, workloads,
  replicas, the leader;
- the usage samples the agents report (usage.py), of which UsageHistory
  keeps a ring per node and per replica (the latest sample every
  SAMPLE_SECONDS over WINDOW_SECONDS), so a page opened now still draws the
  last minutes;
- the events (history) the cache's watch brings (StateCache.on_history),
  of which the last MAX_EVENTS are kept. Events written before this
  scheduler started are not shown: reading them would be an etcd read.

One thread (Feed) samples usage on its timer whether or not a page is
open, and, while one is, rebuilds the view once per TICK_SECONDS and
publishes it when it changed. Each page's stream (server.py) waits on the
feed and sends what was published since it last woke: a "state" (the whole
view, replacing the last one) or a "sample" (one point per graph); a
stream that missed a sample is sent the whole "history" again.

Every part grows with the cluster, so each has a bound: MAX_NODES and
MAX_REPLICAS shown (the view says how many more there are), MAX_SERIES
graphs kept, MAX_EVENTS events.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mctl.common.phases import is_terminal, phase_name, reason_name
from mctl.v1 import types_pb2

from ..cache import StateCache
from ..store import Snapshot, StoreUnavailable
from ..usage import UsageCache

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 5.0
WINDOW_SECONDS = 600.0
POINTS = int(WINDOW_SECONDS / SAMPLE_SECONDS)
TICK_SECONDS = 1.0
MAX_NODES = 500
MAX_REPLICAS = 1000
# Graphs kept: every shown node's and replica's, as far as this allows.
# Each costs 2 * POINTS * 8 bytes (about 2 KiB).
MAX_SERIES = MAX_NODES + MAX_REPLICAS
MAX_EVENTS = 100
_NONE = -1      # a ring slot without a sample: the graph has a gap there

JSON = dict[str, Any]


def node_series(name: str) -> str:
    return f"node:{name}"


def replica_series(namespace: str, name: str) -> str:
    return f"replica:{namespace}/{name}"


class UsageHistory:
    """A ring of (cpu millicores, memory bytes) per series, all sampled at the same times."""

    def __init__(self, points: int = POINTS, max_series: int = MAX_SERIES) -> None:
        self.points = points
        self.max_series = max_series
        self._times = array("q", [0]) * points
        self._taken = 0                 # samples recorded so far; the next goes at _taken % points
        self._series: dict[str, array[int]] = {}

    def record(self, unix_ms: int, values: dict[str, tuple[int, int] | None]) -> None:
        """One sample of every series: `values` names all that still exist (None: no
        sample this time); the series of anything not named are dropped."""
        slot = self._taken % self.points
        self._times[slot] = unix_ms
        for key in [k for k in self._series if k not in values]:
            del self._series[key]
        for key, value in values.items():
            ring = self._series.get(key)
            if ring is None:
                if value is None or len(self._series) >= self.max_series:
                    continue
                ring = self._series[key] = array("q", [_NONE]) * (2 * self.points)
            cpu, memory = value if value is not None else (_NONE, _NONE)
            ring[2 * slot], ring[2 * slot + 1] = cpu, memory
        self._taken += 1

    def series(self, key: str) -> list[list[int]]:
        """[[unix ms, cpu millicores, memory bytes], ...], oldest first, gaps left out."""
        ring = self._series.get(key)
        if ring is None:
            return []
        out = []
        for taken in range(max(0, self._taken - self.points), self._taken):
            slot = taken % self.points
            if ring[2 * slot] != _NONE:
                out.append([self._times[slot], ring[2 * slot], ring[2 * slot + 1]])
        return out

    def keys(self) -> list[str]:
        return list(self._series)

    def latest(self) -> JSON:
        """The last sample: {"t": unix ms, "values": {key: [cpu, memory]}}."""
        if not self._taken:
            return {"t": 0, "values": {}}
        slot = (self._taken - 1) % self.points
        return {"t": self._times[slot],
                "values": {key: [ring[2 * slot], ring[2 * slot + 1]]
                           for key, ring in self._series.items() if ring[2 * slot] != _NONE}}


def _usage_point(usage: types_pb2.Usage | None) -> tuple[int, int] | None:
    if usage is None:
        return None
    return int(round(usage.cpu_cores * 1000)), int(usage.memory_bytes)


def usage_values(snap: Snapshot, usage: UsageCache) -> dict[str, tuple[int, int] | None]:
    """What to record now: shown nodes and the replicas of shown workloads.

    A node that stopped heartbeating, and the replicas on it, get no sample:
    what it last said is no longer a measurement of now.
    """
    values: dict[str, tuple[int, int] | None] = {}
    for name in sorted(snap.nodes)[:MAX_NODES]:
        values[node_series(name)] = (_usage_point(usage.node(name))
                                     if name in snap.heartbeats else None)
    for key in sorted(snap.replicas)[:MAX_REPLICAS]:
        r = snap.replicas[key]
        live = r.node in snap.heartbeats and not is_terminal(r.status.phase)
        values[replica_series(*key)] = _usage_point(usage.replica(key)) if live else None
    return values


def _resources(r: types_pb2.Resources) -> JSON:
    return {"cpu": r.cpu_millis, "memory": r.memory_bytes, "pids": r.pids}


def view(snap: Snapshot, usage: UsageCache, events: list[JSON], scheduler: str,
         leading: bool) -> JSON:
    """The page's whole content, as JSON-able values (the page renders it, nothing else)."""
    allocated: dict[str, list[int]] = {}
    for r in snap.replicas.values():
        if r.node and not is_terminal(r.status.phase):
            a = allocated.setdefault(r.node, [0, 0, 0, 0])
            res = r.spec.resources
            a[0] += res.cpu_millis
            a[1] += res.memory_bytes
            a[2] += res.pids
            a[3] += 1
    nodes = []
    for name in sorted(snap.nodes)[:MAX_NODES]:
        node = snap.nodes[name]
        ready = name in snap.heartbeats
        cpu, memory, pids, count = allocated.get(name, [0, 0, 0, 0])
        now = _usage_point(usage.node(name)) if ready else None
        nodes.append({"name": name, "address": node.address, "ready": ready,
                      "cordoned": node.cordoned, "runtime": node.runtime,
                      "capacity": _resources(node.capacity),
                      "allocated": {"cpu": cpu, "memory": memory, "pids": pids},
                      "usage": None if now is None else {"cpu": now[0], "memory": now[1]},
                      "replicas": count, "series": node_series(name)})
    workloads: dict[tuple[str, str], JSON] = {}
    for key in sorted(snap.workloads):
        w = snap.workloads[key]
        workloads[key] = {"namespace": key[0], "name": key[1], "wanted": w.spec.replicas,
                          "image": w.spec.image, "ip": w.status.virtual_ip,
                          "deleting": w.metadata.deletion_requested, "replicas": []}
    for key in sorted(snap.replicas)[:MAX_REPLICAS]:
        r = snap.replicas[key]
        owner = workloads.setdefault((key[0], r.workload), {
            "namespace": key[0], "name": r.workload, "wanted": 0, "image": "", "ip": "",
            "deleting": True, "replicas": []})
        live = r.node in snap.heartbeats and not is_terminal(r.status.phase)
        now = _usage_point(usage.replica(key)) if live else None
        owner["replicas"].append({
            "name": key[1], "phase": phase_name(r.status.phase),
            "reason": reason_name(r.status.reason), "ready": r.status.ready,
            "node": r.node, "restarts": r.status.restarts, "ip": r.status.ip,
            "message": r.status.message, "deleting": r.metadata.deletion_requested,
            "usage": None if now is None else {"cpu": now[0], "memory": now[1]},
            "series": replica_series(*key)})
    return {"scheduler": scheduler, "leading": leading, "leader": snap.leader,
            "revision": snap.revision, "nodes": nodes,
            "hidden_nodes": max(0, len(snap.nodes) - MAX_NODES),
            "workloads": list(workloads.values()),
            "hidden_replicas": max(0, len(snap.replicas) - MAX_REPLICAS),
            "events": events, "window_seconds": WINDOW_SECONDS,
            "sample_seconds": SAMPLE_SECONDS}


def event_json(e: types_pb2.Event) -> JSON:
    obj = f"{e.namespace}/{e.name}" if e.namespace else e.name
    return {"t": e.unix_ms, "type": e.type, "kind": e.kind, "object": obj,
            "reason": e.reason, "message": e.message, "source": e.source}


@dataclass
class Published:
    """What a stream has sent so far, by sequence numbers of the feed."""

    state: int = 0
    sample: int = 0


class Busy(Exception):
    """More streams than MAX_STREAMS are open."""


class Feed:
    MAX_STREAMS = 8

    def __init__(self, cache: StateCache, usage: UsageCache, scheduler: str,
                 leading: Callable[[], bool]) -> None:
        self.cache = cache
        self.usage = usage
        self.scheduler = scheduler
        self.leading = leading
        self.history = UsageHistory()
        self._events: collections.deque[JSON] = collections.deque(maxlen=MAX_EVENTS)
        self._cond = threading.Condition()
        self._streams = 0
        self._state = ""            # the last view published, as JSON text
        self._state_seq = 0
        self._sample = ""
        self._sample_seq = 0
        self._stop = threading.Event()
        self._wake = threading.Event()      # set on stop and when a page opens
        self._thread = threading.Thread(target=self._run, name="web-feed", daemon=True)

    def start(self) -> None:
        # After whoever the cache tells now (the watch streams' hub).
        before = self.cache.on_history

        def history(stored: bytes) -> None:
            if before is not None:
                before(stored)
            self.add_event(stored)
        self.cache.on_history = history
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=2)

    def add_event(self, stored: bytes) -> None:
        """One event as the watch brought it (an unreadable one is left out)."""
        try:
            e = types_pb2.Event.FromString(stored)
        except Exception:   # noqa: BLE001 - a record of a newer version or a bad write
            return
        with self._cond:
            self._events.append(event_json(e))

    def events(self) -> list[JSON]:
        with self._cond:
            return sorted(self._events, key=lambda e: e["t"])

    # -- streams -----------------------------------------------------------------

    def open_stream(self) -> Published:
        """Counts a stream in (Busy past MAX_STREAMS) and has the view built for it."""
        with self._cond:
            if self._streams >= self.MAX_STREAMS:
                raise Busy(f"{self.MAX_STREAMS} live views are open already")
            self._streams += 1
        self._wake.set()
        self._publish_state()
        return Published()

    def close_stream(self) -> None:
        with self._cond:
            self._streams -= 1

    def next_messages(self, sent: Published, timeout: float) -> list[tuple[str, str]]:
        """(name, JSON text) of what was published after `sent` (updated), waiting up
        to `timeout` for something; [] on timeout or when the feed stops."""
        with self._cond:
            self._cond.wait_for(lambda: self._stop.is_set() or sent.state < self._state_seq
                                or sent.sample < self._sample_seq, timeout)
            if self._stop.is_set():
                return []
            out = []
            if sent.sample < self._sample_seq:
                if sent.sample == 0 or sent.sample + 1 < self._sample_seq:
                    out.append(("history", self._history_json()))
                else:
                    out.append(("sample", self._sample))
                sent.sample = self._sample_seq
            if sent.state < self._state_seq:
                out.append(("state", self._state))
                sent.state = self._state_seq
            return out

    def _history_json(self) -> str:
        return json.dumps({"series": {k: self.history.series(k) for k in self.history.keys()},
                           "window_seconds": WINDOW_SECONDS, "sample_seconds": SAMPLE_SECONDS},
                          separators=(",", ":"))

    # -- the thread ----------------------------------------------------------------

    def _run(self) -> None:
        next_sample = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() >= next_sample:
                next_sample = max(next_sample + SAMPLE_SECONDS, time.monotonic())
                self._take_sample()
            with self._cond:
                streams = self._streams
            if streams:
                self._publish_state()
            # With no page open, nothing to do until the next sample (or a page).
            self._wake.wait(TICK_SECONDS if streams
                            else max(0.0, next_sample - time.monotonic()))
            self._wake.clear()

    def _snapshot(self) -> Snapshot | None:
        try:
            return self.cache.snapshot()
        except StoreUnavailable as e:
            log.debug("web view: no state to show: %s", e)
            return None

    def _take_sample(self) -> None:
        snap = self._snapshot()
        if snap is None:
            return
        values = usage_values(snap, self.usage)
        with self._cond:
            self.history.record(int(time.time() * 1000), values)
            self._sample = json.dumps(self.history.latest(), separators=(",", ":"))
            # Sequence 0 means "nothing sent yet" to a stream: samples count from 1.
            self._sample_seq += 1
            self._cond.notify_all()

    def _publish_state(self) -> None:
        snap = self._snapshot()
        if snap is None:
            text = json.dumps({"error": "the scheduler has no state to show yet: etcd is "
                                        "unreachable", "scheduler": self.scheduler})
        else:
            text = json.dumps(view(snap, self.usage, self.events(), self.scheduler,
                                   self.leading()), separators=(",", ":"))
        with self._cond:
            if text != self._state:
                self._state = text
                self._state_seq += 1
                self._cond.notify_all()

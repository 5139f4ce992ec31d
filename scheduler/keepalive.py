"""Keeping etcd leases alive over one stream, not one stream per refresh.

Every node heartbeat refreshes its node's lease. pyetcd's refresh_lease
opens a new LeaseKeepAlive stream for each call; with a thousand nodes
heartbeating every second, opening streams was where the scheduler's time
went and leases lapsed while it fell behind. etcd's keep-alive is a
bidirectional stream meant to be kept open: requests name a lease, each
response carries the lease's id and remaining TTL, in order. So one stream
serves every refresh: callers queue a request and wait for the response
for their lease id.

A node's heartbeat does not wait for etcd's answer (`refresh_nowait`): the
answer comes back on the stream's reader thread and is handed to a
callback, so a heartbeat costs the scheduler a queue put, and a thousand of
them a second never hold the API's worker threads on etcd round trips.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future

import grpc
from pyetcd import etcdrpc

log = logging.getLogger(__name__)


class KeepAliveBroken(Exception):
    """The stream ended; the refresh may not have reached etcd."""


class _Stream:
    """One open LeaseKeepAlive stream and the refreshes waiting on its answers."""

    def __init__(self) -> None:
        self.requests: queue.Queue[etcdrpc.LeaseKeepAliveRequest | None] = queue.Queue()
        self.waiting: dict[int, deque[Future[int]]] = defaultdict(deque)
        self.open = True

    def feed(self) -> Iterator[etcdrpc.LeaseKeepAliveRequest]:
        while (item := self.requests.get()) is not None:
            yield item


class LeaseKeeper:
    def __init__(self, client: object, timeout: float) -> None:
        self.client = client
        self.timeout = timeout
        self._lock = threading.Lock()
        self._stream: _Stream | None = None

    def refresh(self, lease_id: int) -> int:
        """Refreshes `lease_id`; returns its remaining TTL (0: it had expired)."""
        future: Future[int] = Future()
        with self._lock:
            if self._stream is None or not self._stream.open:
                self._stream = self._open()
            stream = self._stream
            stream.waiting[lease_id].append(future)
            stream.requests.put(etcdrpc.LeaseKeepAliveRequest(ID=lease_id))
        try:
            return future.result(timeout=self.timeout)
        except TimeoutError:
            with self._lock:
                waiting = stream.waiting.get(lease_id)
                if waiting and future in waiting:
                    waiting.remove(future)
            raise KeepAliveBroken(f"no keep-alive answer for lease {lease_id} "
                                  f"within {self.timeout:.0f}s") from None

    def refresh_nowait(self, lease_id: int, on_answer: Callable[[int], None]) -> None:
        """Queues a refresh of `lease_id`; `on_answer(ttl)` is called from the reader
        thread with the remaining TTL (0: expired), or with -1 if the stream ended
        before the answer (whether etcd got the request is then unknown)."""
        future: Future[int] = Future()

        def done(f: Future[int]) -> None:
            on_answer(-1 if f.exception() is not None else f.result())
        future.add_done_callback(done)
        with self._lock:
            if self._stream is None or not self._stream.open:
                self._stream = self._open()
            self._stream.waiting[lease_id].append(future)
            self._stream.requests.put(etcdrpc.LeaseKeepAliveRequest(ID=lease_id))

    def close(self) -> None:
        with self._lock:
            if self._stream is not None:
                self._stream.open = False
                self._stream.requests.put(None)
                self._stream = None

    def _open(self) -> _Stream:
        stream = _Stream()
        c = self.client
        responses = c.leasestub.LeaseKeepAlive(  # type: ignore[attr-defined]
            stream.feed(), credentials=c.call_credentials,  # type: ignore[attr-defined]
            metadata=c.metadata)  # type: ignore[attr-defined]
        threading.Thread(target=self._read, args=(stream, responses), name="lease-keepalive",
                         daemon=True).start()
        return stream

    def _read(self, stream: _Stream,
              responses: Iterator[etcdrpc.LeaseKeepAliveResponse]) -> None:
        error: BaseException | None = None
        try:
            for response in responses:
                with self._lock:
                    waiting = stream.waiting.get(response.ID)
                    future = waiting.popleft() if waiting else None
                    if waiting is not None and not waiting:
                        # Leases come and go (revived ones get new ids): keep
                        # only those with a refresh on the way.
                        del stream.waiting[response.ID]
                if future is not None and not future.done():
                    future.set_result(int(response.TTL))
        except grpc.RpcError as e:
            error = e
        # The stream is over: whoever still waits on it must retry on a new one.
        with self._lock:
            stream.open = False
            stranded = [f for fs in stream.waiting.values() for f in fs]
            stream.waiting.clear()
        if error is not None:
            log.warning("lease keep-alive stream ended: %s", error)
        for f in stranded:
            if not f.done():
                f.set_exception(KeepAliveBroken(f"keep-alive stream ended: {error}"))

"""A threading TCP server that handles at most N connections at once.

The daemons' small HTTP servers (metricshttp.py, the scheduler's web view)
run a thread per connection; without a bound, a client opening connections
faster than they end would grow threads without limit. A connection beyond
the bound gets `refuse(request)` (nothing, unless a subclass says more) and
is closed at once.
"""

from __future__ import annotations

import socketserver
import threading
from typing import Any


class LimitedThreadingTCPServer(socketserver.ThreadingTCPServer):
    """ThreadingTCPServer with a bound; call `limit_connections` in __init__."""

    daemon_threads = True
    _slots: threading.BoundedSemaphore

    def limit_connections(self, count: int) -> None:
        self._slots = threading.BoundedSemaphore(count)

    def refuse(self, request: Any) -> None:
        """What a connection beyond the bound is sent before it is closed."""

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refuse(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

"""The HTTP endpoint of --metrics-listen: GET /metrics, one small page, closed.

A scrape needs none of HTTP but a request line, headers to skip and a reply
with a length, so this is socketserver with a thread per connection rather
than http.server, which imports http.client and with it `ssl` (OpenSSL,
megabytes an idle agent otherwise never maps). Everything a client sends is
bounded: the request line and each header line (8 KiB), the header count
(100), the time to send them (REQUEST_TIMEOUT) and the connections served at
once (MAX_CONNECTIONS; more are closed at once, and Prometheus tries again
at its next interval). No keep-alive: Prometheus opens a connection per
scrape when the server closes it, and no idle connection holds a thread.
"""

from __future__ import annotations

import logging
import socket
import socketserver
from collections.abc import Callable
from typing import Any

from .connlimit import LimitedThreadingTCPServer
from .promtext import CONTENT_TYPE

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 8
REQUEST_TIMEOUT = 10.0
_MAX_LINE = 8192
_MAX_HEADERS = 100
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large"}


class _Handler(socketserver.StreamRequestHandler):
    """One scrape: GET (or HEAD) of /metrics or /, answered and closed."""

    timeout = REQUEST_TIMEOUT
    server: MetricsServer

    def handle(self) -> None:
        request = self.rfile.readline(_MAX_LINE + 1)
        parts = request.split()
        if len(request) > _MAX_LINE or len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            self._reply(400, b"bad request line\n")
            return
        for _ in range(_MAX_HEADERS):
            line = self.rfile.readline(_MAX_LINE + 1)
            if len(line) > _MAX_LINE:
                self._reply(431, b"header line too long\n")
                return
            if line in (b"\r\n", b"\n", b""):
                break
        else:
            self._reply(431, b"too many header lines\n")
            return
        method, path = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            self._reply(405, b"only GET and HEAD\n", [("Allow", "GET, HEAD")])
        elif path not in (b"/metrics", b"/"):
            self._reply(404, b"metrics are at /metrics\n")
        else:
            body = self.server.page()
            self._reply(200, body, [("Content-Type", CONTENT_TYPE)],
                        head=method == b"HEAD")

    def _reply(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None,
               head: bool = False) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS[status]}", f"Content-Length: {len(body)}",
                 "Connection: close"]
        if status != 200:
            lines.append("Content-Type: text/plain; charset=utf-8")
        lines += [f"{k}: {v}" for k, v in headers or []]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head else body))


class MetricsServer(LimitedThreadingTCPServer):
    """Serves `page()` (called at each scrape); a thread per scrape, at most
    MAX_CONNECTIONS at once. serve_forever() in a thread of the caller's."""

    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], page: Callable[[], bytes]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.page = page
        self.limit_connections(MAX_CONNECTIONS)
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A scraper that hangs up or times out is not the daemon's error.
        log.debug("metrics request from %s failed", client_address, exc_info=True)

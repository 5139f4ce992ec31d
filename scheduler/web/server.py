"""The web view's HTTP server (`mctl-scheduler --web-listen ADDR`).

The standard library's ThreadingHTTPServer, on a port of its own (off the
gRPC port, as the metrics are): a thread per connection, at most
MAX_CONNECTIONS at once (one more is answered 503 and closed), each with a
socket timeout, so a stalled or flooding client holds at most that many
threads. Live pages hold one connection each for their event stream
(feed.py), at most Feed.MAX_STREAMS of them.

One port speaks both plain HTTP and TLS: the first byte a client sends
tells them apart (a TLS ClientHello starts with 0x16, an HTTP request with
a letter). Over TLS a client certificate of the cluster CA is required and
an admin's is let in without a token (`curl --cert admin.crt ...`); any
request may instead present the token (access.py). The files served are
fixed: the page, its script and its style sheet (static/), read once.
"""

from __future__ import annotations

import http.server
import logging
import socket
import ssl
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mctl.common import pki
from mctl.common.connlimit import LimitedThreadingTCPServer

from . import access
from .feed import Busy, Feed

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 32
SOCKET_TIMEOUT = 15.0
# A comment line on the event stream this often: the browser sees the link
# alive, and a page that went away is noticed on the write that fails.
KEEPALIVE_SECONDS = 10.0
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
_TLS_HANDSHAKE = 0x16
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class WebTLS:
    """The scheduler's own certificate and the CA its clients' must be signed by."""

    ca_pem: bytes
    cert_path: str
    key_path: str

    def context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_path, self.key_path)
        ctx.load_verify_locations(cadata=self.ca_pem.decode())
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


class _Server(LimitedThreadingTCPServer, http.server.HTTPServer):
    # The default of 5 drops connections under a burst of page loads.
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], feed: Feed, token: str | None,
                 tls: ssl.SSLContext | None) -> None:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, _Handler)
        self.feed = feed
        self.token = token
        self.tls = tls
        self.cookie = access.cookie_name(self.server_address[1])
        self.files = {path: ((Path(__file__).parent / "static" / name).read_bytes(), kind)
                      for path, (name, kind) in STATIC.items()}
        self.limit_connections(MAX_CONNECTIONS)
        self.feed_stopped = threading.Event()     # streams end when it is set

    def refuse(self, request: Any) -> None:
        try:
            request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                            b"Connection: close\r\n\r\n")
        except OSError:
            pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up or failed its handshake is no server error.
        log.debug("web view: connection from %s ended", client_address, exc_info=True)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    timeout = SOCKET_TIMEOUT
    server_version = "mctl-scheduler"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        self.admin_cert = False
        self.request.settimeout(SOCKET_TIMEOUT)
        first = self.request.recv(1, socket.MSG_PEEK)
        if first and first[0] == _TLS_HANDSHAKE and self.server.tls is not None:
            self.request = self.server.tls.wrap_socket(self.request, server_side=True)
            der = self.request.getpeercert(binary_form=True)
            who = pki.identity_of_pem(ssl.DER_cert_to_PEM_cert(der).encode()) if der else None
            self.admin_cert = who is not None and who.role == "admin"
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:   # noqa: A002 - the base's name
        log.debug("web view: %s %s", self.address_string(), format % args)

    # -- answers -------------------------------------------------------------------

    def _send(self, status: int, body: bytes, kind: str = "text/plain; charset=utf-8",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {**_SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _given_token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return auth[len("Bearer "):].strip()
        for part in self.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == self.server.cookie:
                return value
        return None

    def _allowed(self) -> bool:
        return self.admin_cert or access.token_matches(self._given_token(), self.server.token)

    def do_HEAD(self) -> None:    # noqa: N802 - http.server's naming
        self.do_GET()

    def do_GET(self) -> None:     # noqa: N802 - http.server's naming
        url = urllib.parse.urlsplit(self.path)
        try:
            query = urllib.parse.parse_qs(url.query, max_num_fields=4)
        except ValueError:
            self._send(400, b"too many query fields\n")
            return
        if url.path == "/" and "token" in query:
            self._log_in(query["token"][0])
            return
        if not self._allowed():
            self._send(401, b"the mctl web view is for admins: open the address `mctl cluster "
                            b"up` printed (it carries the token), or present an admin "
                            b"certificate over TLS\n",
                       headers={"WWW-Authenticate": 'Bearer realm="mctl"'})
            return
        if url.path == "/events":
            if self.command == "HEAD":
                self._send(200, b"", "text/event-stream")
            else:
                self._stream()
            return
        found = self.server.files.get(url.path)
        if found is None:
            self._send(404, b"not found\n")
            return
        body, kind = found
        self._send(200, body, kind)

    def _log_in(self, given: str) -> None:
        if not access.token_matches(given, self.server.token):
            self._send(403, b"wrong token: open the address `mctl cluster up` printed "
                            b"(or read the token from the cluster dir's web.token)\n")
            return
        secure = "; Secure" if isinstance(self.request, ssl.SSLSocket) else ""
        self._send(303, b"", headers={
            "Location": "/",
            "Set-Cookie": f"{self.server.cookie}={self.server.token}; HttpOnly; "
                          f"SameSite=Strict; Path=/{secure}"})

    def _stream(self) -> None:
        feed = self.server.feed
        try:
            sent = feed.open_stream()
        except Busy as e:
            self._send(503, f"{e}; close one and reload\n".encode(),
                       headers={"Retry-After": "10"})
            return
        try:
            self.send_response(200)
            for name, value in _SECURITY_HEADERS.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "text/event-stream")
            # The stream ends with the connection: no length, nothing after it.
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            self.wfile.write(b"retry: 2000\n\n")
            while not self.server.feed_stopped.is_set():
                messages = feed.next_messages(sent, KEEPALIVE_SECONDS)
                if not messages:
                    self.wfile.write(b": alive\n\n")
                for name, data in messages:
                    self.wfile.write(f"event: {name}\ndata: {data}\n\n".encode())
                self.wfile.flush()
        except OSError:
            pass    # the page went away
        finally:
            feed.close_stream()


class WebView:
    """The feed and the server, started and stopped together."""

    def __init__(self, address: str, feed: Feed, token: str | None,
                 tls: WebTLS | None) -> None:
        self.feed = feed
        host, port = access.parse_address(address)
        self._server = _Server((host, port), feed, token, tls.context() if tls else None)
        self._thread = threading.Thread(target=self._server.serve_forever, name="web",
                                        kwargs={"poll_interval": 0.5}, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self.feed.start()
        self._thread.start()

    def close(self) -> None:
        self._server.feed_stopped.set()
        self.feed.close()
        self._server.shutdown()
        self._server.server_close()

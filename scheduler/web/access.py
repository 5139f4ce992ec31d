"""Who may see the web view: admins, by certificate or by bearer token.

The view shows the whole cluster, so it is for the same people as the
control plane: callers with an admin certificate of the cluster CA (over
TLS, on the view's own port), or whoever holds the token `mctl cluster up`
writes to the cluster dir (mode 0600) and prints. A browser is given the
token once in the address (`/?token=...`); the server answers with an
HttpOnly cookie and a redirect to `/`, so the token leaves the address bar
and no script of the page can read it. Tokens are compared in constant
time (hmac.compare_digest).

This module is imported only when --web-listen is given, and imports
nothing heavy: it checks the flags before the server starts.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat

# A token of 32 random bytes, as URL-safe base64 (43 characters); a file
# holding more than this is not a token file.
TOKEN_BYTES = 32
MAX_TOKEN_FILE = 512
MIN_TOKEN_CHARS = 16


class WebAccessError(ValueError):
    """A flag or file the web view cannot use; the message names it."""


def parse_address(address: str) -> tuple[str, int]:
    """host:port (or [v6]:port) of --web-listen."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise WebAccessError(f"--web-listen {address!r}: must be host:port, "
                             "e.g. 127.0.0.1:7080")
    return host.strip("[]"), int(port)


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def write_token_file(path: str) -> str:
    """The token in `path`, made (0600) if the file does not exist yet."""
    try:
        return read_token_file(path)
    except FileNotFoundError:
        pass
    token = new_token()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def read_token_file(path: str) -> str:
    """The token of --web-token-file; it must be readable by its owner only."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise WebAccessError(f"--web-token-file {path}: mode {stat.S_IMODE(mode):04o}, "
                                 "but a token must be readable by its owner only (0600)")
        data = f.read(MAX_TOKEN_FILE + 1)
    token = data.decode(errors="replace").strip()
    if len(data) > MAX_TOKEN_FILE or len(token) < MIN_TOKEN_CHARS or not token.isprintable() \
            or any(c.isspace() or c in ";,\"\\" for c in token):
        raise WebAccessError(f"--web-token-file {path}: not a token (one line of "
                             f"{MIN_TOKEN_CHARS} to {MAX_TOKEN_FILE} printable characters, "
                             "no spaces, quotes, commas or semicolons)")
    return token


def token_matches(given: str | None, token: str | None) -> bool:
    """Constant time in the token's content, whatever `given` is."""
    if not given or not token:
        return False
    return hmac.compare_digest(given.encode(errors="replace"), token.encode())


def cookie_name(port: int) -> str:
    # Browsers share cookies between the ports of one host: a name per port
    # keeps two schedulers (or two clusters) on one machine apart.
    return f"mctl_web_{port}"

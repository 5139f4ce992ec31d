"""Lists in pages: every List* reply fits a gRPC message, however big the cluster.

A list that answers with everything at once fails for everyone once the
cluster outgrows the message limit (20,000 replicas, each with a copy of
its spec, are tens of MiB). So the API pages, as Kubernetes' `limit` and
`continue` and etcd's ranged reads do:

- items are walked in one stable order, by key (namespace, then name;
  for events, time then position), and a page ends after `page_size` items
  (0 = the most the server allows; more is capped) or once it holds
  `MAX_PAGE_BYTES`, whichever comes first, never before its first item;
- the page's token is the last key it returned, opaque to clients (base64
  of JSON); the next page starts strictly after it (keyset paging). So
  no item is returned twice, an item added or changed between two pages is
  seen as it is when its page is read, and a token stays valid however
  long the client takes: there is no server-side cursor to expire.

Pure: no gRPC, no store.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

# Items per page at most; what a client asks beyond it is capped.
MAX_PAGE_ITEMS = 1000
# Bytes of items per page at most: well inside the channels' message limit
# (common/rpc.py) even with the reply's other fields.
MAX_PAGE_BYTES = 4 << 20

Key = tuple[str | int, ...]
T = TypeVar("T")


class BadPageToken(ValueError):
    """A page token this server did not make (or made for another list)."""


def page_size(requested: int) -> int:
    """How many items a page may hold for a request that asked for `requested`."""
    if requested <= 0 or requested > MAX_PAGE_ITEMS:
        return MAX_PAGE_ITEMS
    return requested


def encode(key: Key) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def decode(token: str, shape: Sequence[type]) -> Key | None:
    """The key a token names (None for "" = the first page); checks it has `shape`."""
    if not token:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, binascii.Error, UnicodeError):
        raise BadPageToken("page_token is not a token this server gave") from None
    # bool is an int to Python: refuse it, as JSON's true is no position.
    if (not isinstance(key, list) or len(key) != len(shape)
            or not all(type(k) is t for k, t in zip(key, shape, strict=True))):
        raise BadPageToken("page_token is not a token of this list")
    return tuple(key)


def after(keys: Sequence[Key], token: str, shape: Sequence[type]) -> int:
    """The index in sorted `keys` where the page after `token` starts."""
    last = decode(token, shape)
    return 0 if last is None else bisect.bisect_right(keys, last)


def take(entries: Iterable[tuple[Key, T]], requested: int,
         size_of: Callable[[T], int]) -> tuple[list[T], str]:
    """One page of `entries` (already in key order, starting after the token).

    Returns the page and the next page's token ("" when nothing is left).
    """
    limit = page_size(requested)
    out: list[T] = []
    used = 0
    last: Key | None = None
    for key, item in entries:
        size = size_of(item)
        if len(out) == limit or (out and used + size > MAX_PAGE_BYTES):
            assert last is not None
            return out, encode(last)
        out.append(item)
        used += size
        last = key
    return out, ""

"""JSON on the runtime's start path through CPython's `_json`, without importing `json`.

`import json` brings in `re` (for the patterns of its pure-Python fallbacks)
and with it enum, functools and collections: about 5 ms of `mctl-runtime
run`, which is timed against `runc run`, spent on code that the C scanner
and encoder never call. `json.loads` and `json.dumps` (without indent) use
exactly these C functions; when the interpreter has no `_json`, this module
falls back to `json` itself. Errors are `ValueError`s as with `json`.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_WHITESPACE = " \t\n\r"

try:
    from _json import encode_basestring_ascii, make_encoder, make_scanner
except ImportError:  # not CPython: the json module is the same thing, slower to import
    make_scanner = None


class _DecoderSettings:
    """The attributes `_json.make_scanner` reads from a json.JSONDecoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        # json's default for NaN, Infinity and -Infinity.
        return float(name)


def _unsupported(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


if make_scanner is not None:
    _scan = make_scanner(_DecoderSettings())
    # (markers, default, encoder, indent, key_separator, item_separator,
    #  sort_keys, skipkeys, allow_nan): json.dumps' defaults, markers=None
    # skipping the check for cycles (the runtime's documents are trees).
    _encode = make_encoder(None, _unsupported, encode_basestring_ascii, None, ": ", ", ",
                           False, False, True)


def loads(text: str | bytes) -> Any:
    """As json.loads, for UTF-8 text."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if make_scanner is None:
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as e:
        raise ValueError(f"Expecting value: char {e.value}") from None
    rest = text[end:]
    if rest.strip(_WHITESPACE):
        raise ValueError(f"Extra data: char {end + len(rest) - len(rest.lstrip(_WHITESPACE))}")
    return value


def dumps(value: Any) -> str:
    """As json.dumps(value) with its defaults (ASCII, ", " and ": ")."""
    if make_scanner is None:
        import json

        return json.dumps(value)
    return "".join(_encode(value, 0))

"""JSON for the runtime's start path, through CPython's C scanner and encoder.

`mctl-runtime run` is timed against `runc run` as a whole process, and
`import json` is the largest single cost of its start-up: the package
compiles regular expressions at import, so it brings `re`, and with it enum,
functools and collections (~6-7 ms of a ~30 ms `run`; bench/README.md, "Import
costs on the start path" and "The start path, third pass"). The parsing
and encoding that `json.loads` and compact `json.dumps` do are in CPython's
`_json` extension (Modules/_json.c), which imports nothing. This module
drives it directly with the settings `json` uses by default, so a document
reads and writes exactly as with `json`:

- `loads`: strict strings (no raw control characters), ints and floats as
  `int` and `float`, NaN and Infinity accepted; leading and trailing
  whitespace allowed, anything else after the value is an error;
- `dumps`: ASCII output with `\\uXXXX` escapes, no NaN check beyond json's
  own (allow_nan), keys in insertion order, compact or json's default
  separators.

`_json` is an implementation detail of CPython: where it is missing or its
entry points differ (another interpreter, a future version), this falls
back to the `json` package, so behaviour never depends on it, only speed.
Errors are json's: ValueError (json.JSONDecodeError) for a bad document,
TypeError for an object json cannot encode.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_WHITESPACE = " \t\n\r"


class _ScanContext:
    """The attributes `_json.make_scanner` reads: json.JSONDecoder's defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    # json maps only NaN, Infinity and -Infinity through this; float reads all three.
    parse_constant = float


def _unencodable(obj: object) -> object:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_scan: Callable[[str, int], tuple[object, int]] | None = None
_make_encoder: Callable[..., Callable[[object, int], list[str]]] | None = None
_encode_string: Callable[[str], str] | None = None
try:
    from _json import encode_basestring_ascii as _encode_string
    from _json import make_encoder as _make_encoder
    from _json import make_scanner

    # The stub types the context as a scanner; the C code reads only its attributes.
    _scan = make_scanner(_ScanContext())  # type: ignore[arg-type]
except (ImportError, TypeError, AttributeError):
    # Not CPython's _json as known: `json` does the work (see the docstring).
    _scan = _make_encoder = _encode_string = None


def loads(text: str | bytes) -> Any:
    """json.loads(text) for str or UTF-8 bytes; ValueError if it is not one JSON value."""
    if isinstance(text, bytes):
        if _scan is None or b"\0" in text[:4]:
            # json also reads UTF-16 and UTF-32, told apart by their zero bytes.
            import json

            return json.loads(text)
        # As json: a UTF-8 byte order mark is skipped (not by the utf-8-sig
        # codec, which is one more module to import).
        text = (text[3:] if text[:3] == b"\xef\xbb\xbf" else text).decode()
    if _scan is None or text[:1] == "\ufeff":
        import json  # json's own error for a str that starts with a byte order mark

        return json.loads(text)
    start = _skip_whitespace(text, 0)
    try:
        value, end = _scan(text, start)
    except StopIteration as e:
        raise _error("Expecting value", text, e.value) from None
    end = _skip_whitespace(text, end)
    if end != len(text):
        raise _error("Extra data", text, end)
    return value


def dumps(obj: object, compact: bool = False) -> str:
    """json.dumps(obj), or with separators (",", ":") if `compact`."""
    item_sep, key_sep = (",", ":") if compact else (", ", ": ")
    if _make_encoder is None:
        import json

        return json.dumps(obj, separators=(item_sep, key_sep))
    # (markers, default, encoder, indent, key_separator, item_separator,
    #  sort_keys, skipkeys, allow_nan): what json.JSONEncoder passes by default.
    encode = _make_encoder({}, _unencodable, _encode_string, None, key_sep, item_sep,
                           False, False, True)
    return "".join(encode(obj, 0))


def _skip_whitespace(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in _WHITESPACE:
        i += 1
    return i


def _error(msg: str, text: str, pos: int) -> ValueError:
    # json.JSONDecodeError, loaded only on failure (the C scanner does the same).
    from json import JSONDecodeError

    return JSONDecodeError(msg, text, pos)

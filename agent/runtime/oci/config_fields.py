"""The error and the typed field reader every part of config.json's parsing shares.

A leaf module, so the parsers split out of config.py (config_cgroups.py)
and config.py itself use one ConfigError, and an error always names the
field by its path in config.json ("linux.resources.cpu.cpus").
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class JSONFileError(ValueError):
    """A file given on the command line (--process, -r) that is no bounded JSON object."""


def read_json_object(path: str, limit: int, what: str) -> dict[str, Any]:
    """The JSON object in `path` ("-": standard input), of at most `limit` bytes.

    JSONFileError says what is wrong in a few words, for the caller to
    prefix with the flag; `what` names the object the file must hold.
    """
    import sys

    from .. import cjson

    try:
        if path == "-":
            raw = sys.stdin.buffer.read(limit + 1)
        else:
            with open(path, "rb") as f:
                raw = f.read(limit + 1)
    except OSError as e:
        raise JSONFileError(e.strerror or str(e)) from None
    if len(raw) > limit:
        raise JSONFileError(f"larger than {limit} bytes")
    try:
        doc = cjson.loads(raw)
    except ValueError as e:
        raise JSONFileError(f"not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise JSONFileError(f"must be a JSON object ({what})")
    return doc


class ConfigError(ValueError):
    """config.json is missing, unreadable or has a bad field."""

    def __init__(self, field_path: str, problem: str) -> None:
        super().__init__(f"config.json: {field_path}: {problem}")
        self.field_path = field_path
        self.problem = problem


def _get(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str,
         default: Any = None, required: bool = False) -> Any:
    if key not in doc:
        if required:
            raise ConfigError(f"{where}{key}", "required")
        return default
    value = doc[key]
    if isinstance(value, bool) and kind is int or not isinstance(value, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        names = " or ".join(k.__name__.replace("str", "string").replace("dict", "object")
                            .replace("list", "array") for k in kinds)
        raise ConfigError(f"{where}{key}", f"must be {names}")
    return value

"""`get`'s kubectl-style output choices over the objects `-o json` shows.

- `-o name`: `kind/name`, one a line, for scripts (`xargs mctl describe`);
- `-o custom-columns=NAME:.metadata.name,NODE:.node`: a table of the
  JSONPaths given (`<none>` where one finds nothing);
- `--sort-by=.metadata.name`: the items in the order of that JSONPath's
  value (numbers by value, text by text, items without it first), for
  every output, tables included.

The paths are JSONPaths over each item's JSON form (cli/jsonpath.py), so
what `-o json` shows is what can be selected, sorted and printed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .jsonpath import TemplateError, compile_path, show

# A column list is typed by a person; a table wider than this is a mistake.
MAX_COLUMNS = 32


def names(kind: str, items: Sequence[dict[str, Any]]) -> str:
    """`-o name`: `workload/web`, ...; `kind` is the singular (workload, replica, node)."""
    return "\n".join(f"{kind}/{_name(item)}" for item in items)


def _name(item: dict[str, Any]) -> str:
    meta = item.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("name"), str):
        return str(meta["name"])
    return str(item.get("name", ""))     # nodes carry their name at the top


def parse_columns(spec: str) -> list[tuple[str, str]]:
    """`NAME:.path,...` as (header, path) pairs; TemplateError naming the bad column."""
    columns = []
    for part in spec.split(","):
        header, colon, path = part.partition(":")
        if not colon or not header.strip() or not path.strip():
            raise TemplateError(f"column {part!r} is not HEADER:JSONPATH"
                                " (e.g. NAME:.metadata.name)")
        columns.append((header.strip(), path.strip()))
    if len(columns) > MAX_COLUMNS:
        raise TemplateError(f"more than {MAX_COLUMNS} columns")
    return columns


def custom_columns(spec: str, items: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The headers and rows of `-o custom-columns=spec` over `items`."""
    columns = parse_columns(spec)
    finders = [compile_path(path) for _, path in columns]
    rows = []
    for item in items:
        row = []
        for find in finders:
            found = find(item, item)
            row.append(",".join(show(v) for v in found) if found else "<none>")
        rows.append(row)
    return [header for header, _ in columns], rows


def sort_order(path: str, items: Sequence[dict[str, Any]]) -> list[int]:
    """The indices of `items` in the order of the value at `path` (stable).

    Numbers sort by value, everything else by its printed text; numbers
    before text if a field holds both. Items where the path finds nothing
    come first, as kubectl puts them.
    """
    find = compile_path(path)

    def key(i: int) -> tuple[int, float, str]:
        found = find(items[i], items[i])
        if not found:
            return (0, 0.0, "")
        value = found[0]
        if isinstance(value, bool):
            return (2, 0.0, show(value))
        if isinstance(value, int | float):
            return (1, float(value), "")
        if isinstance(value, str) and _numeric(value):
            # proto3 JSON writes 64-bit integers as strings ("createdUnixMs": "17...").
            return (1, float(value), "")
        return (2, 0.0, show(value))
    return sorted(range(len(items)), key=key)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip() == text and text.lstrip("-").replace(".", "", 1).isdigit()

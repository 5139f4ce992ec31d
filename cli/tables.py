"""kubectl's plain tables: upper-case headers, columns three spaces apart, padded.

On its own (no protobuf, no YAML) so that commands printing a table of
their own (`config get-contexts`) do not pay for output.py's imports.
"""

from __future__ import annotations

from collections.abc import Sequence


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers)] + [list(r) for r in rows]:
        cells = [c.ljust(widths[i]) for i, c in enumerate(row)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)

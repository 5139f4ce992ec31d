"""Prometheus' text exposition format, version 0.0.4: what a scrape reads.

A page is a list of families, each `# HELP name text`, `# TYPE name kind`
and its samples, one a line: `name{label="value",...} number`. Only three
things need escaping: a backslash and a newline in HELP text, and those
plus a double quote in label values. Numbers are Go's spelling of a
float64: `+Inf`, `-Inf` and `NaN` for the special values. Histogram bucket
bounds (`le`) are label values, so they are written the same way; their
spelling is part of a series' identity, hence kept exactly as
prometheus_client wrote it (`0.25`, `1.0`, `+Inf`), so dashboards and
recording rules made against earlier versions still match.

common/metrics.py holds the values and calls this at each scrape; this
module only spells them (and so can be tested against Prometheus' own
parser without a server).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (sample name suffix, ((label, value), ...), value)
Row = tuple[str, Sequence[tuple[str, str]], float]


@dataclass
class Family:
    """One metric family as written: its name, kind, help and samples."""
    name: str                     # as in the HELP/TYPE lines (a counter's ends in _total)
    kind: str                     # counter, gauge, histogram
    help: str
    rows: list[Row] = field(default_factory=list)

    def add(self, suffix: str, labels: Sequence[tuple[str, str]], value: float) -> None:
        self.rows.append((suffix, labels, value))


def number(value: float) -> str:
    """A float64 as the format writes it."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = repr(float(value))
    # Go writes large numbers with an exponent (1.7e+09) where Python's repr
    # writes every digit; either parses to the same float64, but keeping
    # Go's spelling keeps pages identical to what prometheus_client served.
    mantissa, _, exponent = text.partition("e")
    if exponent:
        sign = exponent[0] if exponent[0] in "+-" else "+"
        digits = exponent.lstrip("+-")
        return f"{mantissa}e{sign}{digits.zfill(2)}"
    whole = mantissa.split(".", 1)[0]
    if value > 0 and len(whole) > 6:
        digits = (mantissa.replace(".", "").rstrip("0") or "0")
        head, tail = digits[0], digits[1:]
        return f"{head}.{tail}e+{len(whole) - 1:02d}" if tail else f"{head}e+{len(whole) - 1:02d}"
    return text


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def encode(families: Iterable[Family]) -> bytes:
    """The page of `families`, in their order and their samples' order."""
    out: list[str] = []
    for f in families:
        out.append(f"# HELP {f.name} {escape_help(f.help)}\n# TYPE {f.name} {f.kind}\n")
        base = f.name.removesuffix("_total") if f.kind == "counter" else f.name
        for suffix, labels, value in f.rows:
            if labels:
                inner = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels)
                out.append(f"{base}{suffix}{{{inner}}} {number(value)}\n")
            else:
                out.append(f"{base}{suffix} {number(value)}\n")
    return "".join(out).encode()

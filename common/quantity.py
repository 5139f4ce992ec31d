"""Resource quantities: CPU in millicores, memory in bytes, written as Kubernetes does.

CPU is counted in cores and stored in millicores (1000 = one core): `2`,
`0.5`, `"0.5"` and `"500m"` are all accepted; a value finer than 1m is an
error rather than rounded, so what runs is exactly what was written.

Memory is counted in bytes: plain digits, or a number with a binary suffix
(Ki Mi Gi Ti Pi Ei, powers of 1024) or a decimal one (k/K M G T P E, powers of
1000). `"1.5Gi"` is fine because it is a whole number of bytes; `"64Mb"` is
not a quantity at all. Negative values, booleans and anything over int64 are
rejected.

Arithmetic is exact (Fraction), never float, so `"0.1"` is exactly 100m.
`fractions` (with `decimal`, ~0.5 MiB) is imported on the first parse, not
here: the agent imports this module for flags it rarely gets.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fractions import Fraction

_INT64_MAX = 2**63 - 1

_NUMBER = r"(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))"
_CPU = re.compile(_NUMBER + r"(?P<suffix>m?)")
_MEMORY = re.compile(_NUMBER + r"(?P<suffix>[KMGTPE]i|[kKMGTPE]?)")

_CPU_SCALE = {"": 1000, "m": 1}
_BINARY_SUFFIXES = ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_MEMORY_SCALE = {
    "": 1,
    "k": 1000,
    **{suffix: 1000 ** (i + 1) for i, suffix in enumerate("KMGTPE")},
    **{suffix: 1024 ** (i + 1) for i, suffix in enumerate(_BINARY_SUFFIXES)},
}


class QuantityError(ValueError):
    """A value that is not a valid quantity; the message quotes it."""


def _quote(value: object) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def _amount(value: object, pattern: re.Pattern[str], scale: dict[str, int]) -> Fraction:
    """`value` in the base unit (millicores, bytes): exact, checked for sign and size."""
    from fractions import Fraction

    quoted = _quote(value)
    # bool is an int subclass; `cpu: true` is a typo, not one core.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise QuantityError(f"{quoted} is not a quantity")
    if isinstance(value, str):
        match = pattern.fullmatch(value)
        if match is None:
            raise QuantityError(f"{quoted} is not a quantity")
        amount = Fraction(match["number"]) * scale[match["suffix"]]
    else:
        try:
            # str() first: the float 0.1 means the decimal 0.1, not its binary neighbour.
            amount = Fraction(str(value)) * scale[""]
        except ValueError:  # nan, inf
            raise QuantityError(f"{quoted} is not a quantity") from None
    if amount < 0:
        raise QuantityError(f"{quoted} must not be negative")
    if amount > _INT64_MAX:
        raise QuantityError(f"{quoted} is too large")
    return amount


def parse_cpu(value: object) -> int:
    """Millicores from cores (`2`, `0.5`, `"0.5"`) or millicores (`"500m"`)."""
    amount = _amount(value, _CPU, _CPU_SCALE)
    if amount.denominator != 1:
        raise QuantityError(f"{_quote(value)} is more precise than 1m")
    return int(amount)


def parse_memory(value: object) -> int:
    """Bytes from `134217728`, `"128Mi"`, `"1.5Gi"`, `"500M"`, `"64k"`."""
    amount = _amount(value, _MEMORY, _MEMORY_SCALE)
    if amount.denominator != 1:
        raise QuantityError(f"{_quote(value)} is not a whole number of bytes")
    return int(amount)


def format_cpu(millis: int) -> str:
    """The canonical spelling: whole cores as `"2"`, anything else as `"500m"`."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_memory(n: int) -> str:
    """Exact bytes with the largest binary suffix that divides them (`"64Mi"`), else plain."""
    for suffix in reversed(_BINARY_SUFFIXES):
        factor = _MEMORY_SCALE[suffix]
        if n and n % factor == 0:
            return f"{n // factor}{suffix}"
    return str(n)


def format_bytes_short(n: int) -> str:
    """Approximate bytes for tables: `"512"`, `"12.3Mi"`, `"640Mi"`, `"1.5Gi"`."""
    value = float(n)
    suffix = ""
    for next_suffix in _BINARY_SUFFIXES:
        # 1023.5 and up would print as "1024", so move to the next unit there.
        if abs(value) < 1023.5:
            break
        value /= 1024
        suffix = next_suffix
    if not suffix:
        return str(n)
    text = f"{value:.1f}" if abs(value) < 99.95 else f"{value:.0f}"
    return text.removesuffix(".0") + suffix

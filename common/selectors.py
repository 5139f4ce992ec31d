"""Label selectors: which objects a `get -l` or a List call means, by their labels.

The syntax is kubectl's, so that its users' habits carry over: requirements
separated by commas, all of which must hold.

- `key=value` (or `key==value`): the label is there with that value;
- `key!=value`: the label is absent or has another value;
- `key`: the label is there, whatever its value; `!key`: it is absent;
- `key in (a,b)`: there, with one of the values; `key notin (a,b)`: absent
  or with none of them.

Keys and values follow the label rules objects are held to (common/names.py),
so a selector that could never match because of a typo is refused rather
than answered with an empty list. The same parser runs in the CLI (to fail
before dialling) and in the scheduler (which filters before paging, so a page
of a selected list is as full as one of the whole list).

Pure: no gRPC, no store.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from mctl.common import names

# A selector is typed by a person or a script: a few requirements. The
# bounds keep one request from making the server match forever.
MAX_SELECTOR_CHARS = 4096
MAX_REQUIREMENTS = 64
MAX_SET_VALUES = 64

# The operators, in the order they must be tried (`==` before `=`).
_EQUALS = ("==", "!=", "=")
_SET = re.compile(r"^(?P<key>[^\s()!=,]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")


class SelectorError(ValueError):
    """A selector that is not one: the message says which part and why."""


@dataclass(frozen=True)
class Requirement:
    key: str
    # "=", "!=", "exists", "!exists", "in", "notin"
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        value = labels.get(self.key)
        if self.op in ("=", "in"):
            return present and value in self.values
        # "!=" and "notin": kubectl's meaning, an object without the label matches.
        return not present or value not in self.values


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)


EVERYTHING = Selector()


def _split(text: str) -> list[str]:
    """The requirements of `text`: split at commas outside parentheses."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
            if depth > 1:
                raise SelectorError("nested parentheses")
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError('")" without "("')
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth:
        raise SelectorError('"(" without ")"')
    parts.append("".join(current))
    return parts


def _key(key: str) -> str:
    if problem := names.validate_label_key(key):
        raise SelectorError(problem)
    return key


def _value(value: str) -> str:
    if problem := names.validate_label_value(value):
        raise SelectorError(problem)
    return value


def _requirement(part: str) -> Requirement:
    text = part.strip()
    if not text:
        raise SelectorError("an empty requirement (two commas, or one at an end)")
    if m := _SET.match(text):
        values = [v.strip() for v in m["values"].split(",")]
        if len(values) > MAX_SET_VALUES:
            raise SelectorError(f"more than {MAX_SET_VALUES} values in one set")
        if not all(values):
            raise SelectorError(f"an empty value in {names.quote(text)}")
        return Requirement(_key(m["key"]), m["op"], tuple(_value(v) for v in values))
    for op in _EQUALS:
        key, found, value = text.partition(op)
        if found:
            return Requirement(_key(key.strip()), "!=" if op == "!=" else "=",
                               (_value(value.strip()),))
    if text.startswith("!"):
        return Requirement(_key(text[1:].strip()), "!exists")
    if any(c.isspace() for c in text):
        raise SelectorError(f"{names.quote(text)} is not a requirement: use key=value,"
                            " key!=value, key, !key, key in (a,b) or key notin (a,b)")
    return Requirement(_key(text), "exists")


def parse(text: str) -> Selector:
    """The selector `text` says ("" selects everything); SelectorError if it is not one."""
    if not text.strip():
        return EVERYTHING
    if len(text) > MAX_SELECTOR_CHARS:
        raise SelectorError(f"longer than {MAX_SELECTOR_CHARS} characters")
    parts = _split(text)
    if len(parts) > MAX_REQUIREMENTS:
        raise SelectorError(f"more than {MAX_REQUIREMENTS} requirements")
    return Selector(tuple(_requirement(p) for p in parts))

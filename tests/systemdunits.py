"""Reads deploy/systemd's units and env files the way systemd does, for the tests.

Just enough of systemd.syntax(7), systemd.exec(7) and systemd.service(5) to
run a unit's ExecStart by hand on a machine whose PID 1 is not systemd:
sections and keys with backslash line continuation, EnvironmentFile= lines
(KEY=VALUE, comments, quotes), and ExecStart's variable expansion: `${X}`
is replaced by X's value as one argument, a word that is exactly `$X` is
split on whitespace into zero or more arguments.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "systemd"
# The environment systemd gives a system service before Environment= lines.
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8"}

_BRACED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_BARE = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")


class UnitError(Exception):
    """A unit or env file this reader (and so possibly systemd) does not accept."""


def read_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """{section: [(key, value), ...]} in file order (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
        elif "=" in line and current is not None:
            key, _, value = line.partition("=")
            current.append((key.strip(), value.strip()))
        else:
            raise UnitError(f"{path}:{number}: neither a [section] nor a key=value line")
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def value(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    found = values(unit, section, key)
    if len(found) != 1:
        raise UnitError(f"[{section}] {key}= appears {len(found)} times, want once")
    return found[0]


def parse_env(text: str, name: str = "env file") -> dict[str, str]:
    """An EnvironmentFile's variables: KEY=VALUE lines, # and ; comments, quotes stripped."""
    env: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, val = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise UnitError(f"{name}:{number}: not KEY=VALUE: {raw!r}")
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] and val[0] in "\"'":
            val = val[1:-1]
        elif val and (val[0] in "\"'" or " " in val):
            # Unquoted spaces are fine for systemd but not for a shell that
            # sources the file (as docs/multi-vm.md does for cleanup).
            raise UnitError(f"{name}:{number}: quote a value with spaces: {raw!r}")
        env[key] = val
    return env


def service_env(unit: dict[str, list[tuple[str, str]]], env_file: dict[str, str]
                ) -> dict[str, str]:
    """The service's environment: systemd's base, Environment= lines, then the env file."""
    env = dict(BASE_ENV)
    for assignment in values(unit, "Service", "Environment"):
        for word in shlex.split(assignment):
            key, _, val = word.partition("=")
            env[key] = val
    env.update(env_file)
    return env


def exec_start(unit: dict[str, list[tuple[str, str]]], env: dict[str, str]) -> list[str]:
    """ExecStart's argv with the variables expanded as systemd does."""
    line = value(unit, "Service", "ExecStart").lstrip("-@:+!")
    argv: list[str] = []
    for word in shlex.split(line):
        bare = _BARE.match(word)
        if bare:
            argv += env.get(bare.group(1), "").split()
            continue
        missing = [m for m in _BRACED.findall(word) if m not in env]
        if missing:
            raise UnitError(f"ExecStart uses ${{{missing[0]}}}, which the env file does not set")
        if "$" in _BRACED.sub("", word):
            raise UnitError(f"ExecStart word {word!r}: use ${{X}} or a bare $X word")
        argv.append(_BRACED.sub(lambda m: env[m.group(1)], word))
    return argv

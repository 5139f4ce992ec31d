"""Layering: cli, scheduler and agent import the API and common code, never each other.

They meet only through gRPC (proto/), so each can be deployed, restarted and
understood alone. This test reads every module's imports (without running
them) and fails on a crossing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = {"cli": "mctl.cli", "scheduler": "mctl.scheduler", "agent": "mctl.agent",
          "common": "mctl.common"}
ALLOWED = {
    "cli": {"mctl.cli", "mctl.common", "mctl.v1"},
    "scheduler": {"mctl.scheduler", "mctl.common", "mctl.v1"},
    "agent": {"mctl.agent", "mctl.common", "mctl.v1"},
    "common": {"mctl.common", "mctl.v1"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return {m for m in found if m == "mctl" or m.startswith("mctl.")}


@pytest.mark.parametrize("folder", sorted(LAYERS))
def test_layer_imports_only_what_it_may(folder):
    crossings = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for module in imported_modules(path):
            if not any(module == a or module.startswith(a + ".") for a in ALLOWED[folder]):
                crossings.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not crossings, "\n".join(crossings)

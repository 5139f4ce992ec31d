"""What `mctl-runtime run` imports: the start-up it is timed on against `runc run`.

Not a timing test (those belong in bench/runtime_cli.py): a list of modules
that cost milliseconds each and that the run path was cleared of. A change
that brings one back fails here with the chain that imported it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from boxes import Boxes

pytestmark = pytest.mark.kernel

# Each costs milliseconds of a ~25 ms `run`: `site` (with setuptools' editable
# finder and pathlib), `typing`, `dataclasses` (inspect, ast, dis, tokenize),
# `logging`, `warnings`, and `json` with what it imports (`re`, enum): the
# run path reads and writes JSON through runtime/cjson.py and sets signal
# dispositions through runtime/signals.py, whose `signal` would bring enum
# back (bench/README.md, "The start path, third pass").
HEAVY = {"site", "pathlib", "typing", "dataclasses", "inspect", "ast", "dis", "tokenize",
         "logging", "warnings", "json", "re", "enum", "signal"}


@pytest.fixture(scope="module")
def boxes() -> Iterator[Boxes]:
    b = Boxes("imports")
    try:
        yield b
    finally:
        assert b.close() == {}


def test_run_imports_nothing_heavy(boxes: Boxes) -> None:
    launcher = Path(sys.executable).parent / "mctl-runtime"
    if not launcher.exists():
        pytest.skip("mctl-runtime is not installed beside this interpreter")
    box = boxes.make(["/bin/true"])
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-S", "-X", "importtime", str(launcher),
             "--root", f"{boxes.tmp}/runtime-root", "run", "--bundle", box.bundle, box.id],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, timeout=60)
    finally:
        boxes.teardown(box)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    assert proc.returncode == 0, proc.stderr[-2000:]
    # importtime lists a module after the ones it imported, indented by depth.
    imported = [line.split("|")[-1] for line in lines]
    heavy = {name.strip() for name in imported} & HEAVY
    chains = []
    for i, name in enumerate(imported):
        if name.strip() in heavy:
            depth = len(name) - len(name.lstrip())
            chain = [name.strip()]
            for later in imported[i + 1:]:
                later_depth = len(later) - len(later.lstrip())
                if later_depth < depth:
                    chain.append(later.strip())
                    depth = later_depth
            chains.append(" <- ".join(chain))
    assert not heavy, "\n".join(chains)

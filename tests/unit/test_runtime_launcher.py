"""bin/mctl-runtime: the launcher that starts the OCI runtime command without `site`.

It is a shell script and a Python program at once; these tests load its
Python half (runpy, not as __main__) to check how it finds the mctl package,
and check that the virtualenv runs this checkout's copy.
"""

from __future__ import annotations

import filecmp
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

LAUNCHER = Path(__file__).resolve().parents[2] / "bin" / "mctl-runtime"


@pytest.fixture(scope="module")
def launcher() -> dict:
    return runpy.run_path(str(LAUNCHER), run_name="launcher_under_test")


def write_finder(directory: Path, mapping_line: str) -> None:
    (directory / "__editable___mctl_0_1_0_finder.py").write_text(
        "import sys\nfrom pathlib import Path\n\n" + mapping_line + "\nNAMESPACES = {}\n")


def test_installed_launcher_is_this_checkouts():
    installed = Path(sys.executable).parent / "mctl-runtime"
    if not installed.exists():
        pytest.skip("mctl-runtime is not installed beside this interpreter")
    # pip copies scripts, even for an editable install: after editing
    # bin/mctl-runtime, `pip install -e .` (deploy/install.sh) again.
    assert filecmp.cmp(installed, LAUNCHER, shallow=False), \
        f"{installed} differs from {LAUNCHER}: reinstall (pip install -e .)"


def test_editable_mapping_gives_the_parent_folders(launcher, tmp_path):
    src = tmp_path / "src"
    for folder in ("agent", "cli", "proto/mctl/v1"):
        (src / folder).mkdir(parents=True)
    write_finder(tmp_path, "MAPPING: dict[str, str] = {"
                 f"'mctl.agent': '{src}/agent', 'mctl.cli': '{src}/cli', "
                 f"'mctl.v1': '{src}/proto/mctl/v1'}}")
    assert launcher["editable_parents"](str(tmp_path)) == [str(src), f"{src}/proto/mctl"]


@pytest.mark.parametrize("line", [
    "MAPPING: dict[str, str] = {}",
    "MAPPING = {'mctl.agent': '/nonexistent/agent'}",                # folder missing
    "MAPPING: dict[str, str] = {'mctl.agent': 'SRC/agent\\\\x'}",    # an escape
    "MAPPING: dict[str, str] = {'mctl.agent': \"SRC/agent\"}",       # other quotes
    "MAPPING: dict[str, str] = {'other.agent': 'SRC/agent'}",        # another package
    "MAPPING: dict[str, str] = {'mctl.agent': 'SRC/cli'}",           # name != folder
    "MAPPING: dict[str, str] = {'mctl.agent': 'SRC/ag, ent'}",       # separator inside
    "MAPPING: Final = make_mapping()",
])
def test_anything_unexpected_falls_back_to_site(launcher, tmp_path, line):
    src = tmp_path / "src"
    (src / "agent").mkdir(parents=True)
    (src / "cli").mkdir()
    write_finder(tmp_path, line.replace("SRC", str(src)))
    assert launcher["editable_parents"](str(tmp_path)) == []


def test_no_finder_or_two_finders(launcher, tmp_path):
    assert launcher["editable_parents"](str(tmp_path)) == []
    assert launcher["editable_parents"](str(tmp_path / "missing")) == []
    (tmp_path / "agent").mkdir()
    for version in ("0_1_0", "0_2_0"):
        (tmp_path / f"__editable___mctl_{version}_finder.py").write_text(
            f"MAPPING = {{'mctl.agent': '{tmp_path}/agent'}}\n")
    assert launcher["editable_parents"](str(tmp_path)) == []


def test_runs_without_site_and_with_what_it_needs():
    installed = Path(sys.executable).parent / "mctl-runtime"
    if not installed.exists():
        pytest.skip("mctl-runtime is not installed beside this interpreter")
    proc = subprocess.run([str(installed), "--version"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": "/nonexistent"}, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("mctl-runtime version ")
    # The same start-up, watched: `site` and the editable finder are not loaded.
    proc = subprocess.run([sys.executable, "-I", "-S", "-X", "importtime", str(installed),
                           "--version"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "mctl.agent.runtime.oci.cli" in imported
    # (`re` comes with json, which the runtime reads config.json with.)
    assert not imported & {"site", "__editable___mctl_0_1_0_finder", "pathlib"}

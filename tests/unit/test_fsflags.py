"""common/fsflags.py on the filesystems at hand: the flag is set where it exists, and
refused quietly where it does not."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from mctl.common import fsflags


def _lsattr_says_topdir(path: str) -> bool:
    out = subprocess.run(["lsattr", "-d", path], capture_output=True, text=True, check=True)
    return "T" in out.stdout.split()[0]


def test_sets_the_top_directory_flag_and_keeps_the_others(tmp_path):
    d = str(tmp_path / "containers")
    os.mkdir(d)
    if not fsflags.spread_subdirs(d):
        pytest.skip("this filesystem has no inode flags")
    flags = fsflags.get_flags(d)
    assert flags & fsflags.FS_TOPDIR_FL
    if shutil.which("lsattr"):
        assert _lsattr_says_topdir(d)
    # Again: nothing changes, and it still says the flag is there.
    assert fsflags.spread_subdirs(d)
    assert fsflags.get_flags(d) == flags


def test_a_filesystem_without_flags_is_no_error():
    # /proc has no inode flags: the ioctl is refused (ENOTTY), and that is all.
    assert fsflags.spread_subdirs("/proc/self") is False


def test_a_missing_directory_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        fsflags.spread_subdirs(str(tmp_path / "nope"))

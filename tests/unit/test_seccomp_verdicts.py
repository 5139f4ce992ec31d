"""libseccomp's programs decide as the hand-written compiler they replaced did.

data/seccomp_verdicts.json holds the old compiler's verdicts (seccomp_bpf.py
with the syscall tables of Linux 6.1's UAPI headers, written by a one-off
script before both were deleted) for 80 profiles: RuntimeDefault with
several capability sets on x86_64 and aarch64, and every profile the unit
and kernel tests build. For each, the program's return value for every call
number 0..1023 as x86_64, x32, i386 and aarch64 calls, for nr -1 and x32's
edges, and for argument vectors that probe each argument rule from both
sides. Here the same profiles are built by libseccomp and run through the
classic-BPF interpreter; every verdict must match, but for the exceptions
listed below with their reason.
"""

from __future__ import annotations

import json
import os

import pytest
from seccomp_bpf_interpreter import (
    AUDIT_AARCH64,
    AUDIT_I386,
    AUDIT_X86_64,
    RET_ALLOW,
    RET_ERRNO,
    X32_BIT,
    decode,
    run_bpf,
)

from mctl.agent.runtime import seccomp

DATA = os.path.join(os.path.dirname(__file__), "data", "seccomp_verdicts.json")
SWEEPS = {"x86_64": (AUDIT_X86_64, 0), "x32": (AUDIT_X86_64, X32_BIT),
          "i386": (AUDIT_I386, 0), "aarch64": (AUDIT_AARCH64, 0)}
ENOSYS = RET_ERRNO | 38

# Calls Linux added after 6.1 (the old tables' headers, whose highest
# number was 450 on both architectures) that the installed libseccomp knows:
# RuntimeDefault allows every call libseccomp knows, so these now pass where
# the old tables returned ENOSYS ("newer than the table"). With Debian's
# libseccomp 2.5.4-1+deb12u1: cachestat, fchmodat2, map_shadow_stack,
# futex_wake, futex_wait, futex_requeue (451..456), all of which Docker's
# default profile allows too.
OLD_TABLE_MAX = 450


def newer_calls(arch: str) -> dict[str, int]:
    return {n: nr for n, nr in seccomp.syscall_names(arch).items() if nr > OLD_TABLE_MAX}


# When two argument rules of one call with different actions both match,
# the old compiler let the first one given decide; libseccomp decides by the
# order of its decision tree instead (here the rule on the higher argument,
# args[5], wins over the one on args[1]), and runc and crun, which hand
# their rules to libseccomp, behave as it does. One profile has such an
# overlap: kill gets ERRNO(EACCES) for args[1] != 0 and, like every call,
# ALLOW for args[5] != 0x1234.
OVERLAP_PROFILE = "kernel: kill's argument rule and a long program"
KILL_X86_64 = 62


def expected_exceptions(entry: dict, doc: dict) -> dict[tuple[object, ...], tuple[int, int]]:
    """Input -> (old verdict, new verdict) where they differ for a good reason."""
    out: dict[tuple[object, ...], tuple[int, int]] = {}
    if entry["name"].startswith("RuntimeDefault"):
        allowed = set(doc["syscalls"][0]["names"])
        sweep = "aarch64" if " aarch64" in entry["name"] else "x86_64"
        for call, nr in newer_calls(sweep).items():
            if call in allowed:
                out[(sweep, nr)] = (ENOSYS, RET_ALLOW)
    if entry["name"] == OVERLAP_PROFILE:
        for audit, nr, args, _ in entry["probes"]:
            if (audit, nr) == (AUDIT_X86_64, KILL_X86_64) and args[1] != 0 \
                    and args[5] != 0x1234:
                out[(hex(audit), nr, *args)] = (RET_ERRNO | 13, RET_ALLOW)
    return out


def rle_expand(runs: list[list[int]]) -> list[int]:
    return [v for count, v in runs for _ in range(count)]


with open(DATA) as _f:
    FIXTURE = json.load(_f)


@pytest.mark.parametrize("entry", FIXTURE["profiles"], ids=lambda e: e["name"])
def test_libseccomp_decides_as_the_old_compiler(entry):
    if "runtime_default" in entry:
        rd = entry["runtime_default"]
        doc = seccomp.runtime_default(tuple(rd["caps"]), rd["arch"])
    else:
        doc = entry["doc"]
    program = decode(seccomp.build(seccomp.parse_uncached(doc), entry["native"]))
    allowed = expected_exceptions(entry, doc)
    differences = {}
    for label, (audit, bit) in SWEEPS.items():
        old = rle_expand(entry["sweeps"][label])
        assert len(old) == FIXTURE["sweep"]
        for nr, verdict in enumerate(old):
            new = run_bpf(program, bit | nr, audit)
            if new != verdict:
                differences[(label, nr)] = (verdict, new)
    for audit, nr, args, verdict in entry["probes"]:
        new = run_bpf(program, nr, audit, tuple(args))
        if new != verdict:
            differences[(hex(audit), nr, *args)] = (verdict, new)
    assert differences == allowed


def test_the_exceptions_are_few():
    """The figures: how many inputs were compared, how many differ (with a reason above)."""
    compared = exceptions = 0
    for entry in FIXTURE["profiles"]:
        compared += len(SWEEPS) * FIXTURE["sweep"] + len(entry["probes"])
        if "runtime_default" in entry:
            rd = entry["runtime_default"]
            doc = seccomp.runtime_default(tuple(rd["caps"]), rd["arch"])
        else:
            doc = entry["doc"]
        exceptions += len(expected_exceptions(entry, doc))
    assert len(FIXTURE["profiles"]) == 80
    assert compared == 80 * 4 * 1024 + 4086
    newer = len(newer_calls("x86_64"))
    assert newer == len(newer_calls("aarch64")) <= 10
    assert exceptions == 5 * newer + 10

"""Seccomp profiles: checking linux.seccomp, and what libseccomp's program decides.

The program is run through a small classic-BPF interpreter
(seccomp_bpf_interpreter.py), written from the kernel's description of the
instruction set and of struct seccomp_data, not from libseccomp, so these
tests check the program against the kernel's semantics: for an (arch, nr,
args) the return value the kernel would act on. test_seccomp_verdicts.py
holds it to the verdicts of the hand-written compiler it replaced.
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
    RET_KILL_PROCESS,
    RET_LOG,
    run_bpf,
    trace,
)

from mctl.agent.runtime import seccomp
from mctl.agent.runtime import syscalls as sc
from mctl.agent.runtime.oci import config as oci
from mctl.agent.runtime.privileges import load_seccomp
from mctl.agent.runtime.seccomp import default as seccomp_default
from mctl.agent.runtime.seccomp import program as seccomp_program

# Call numbers as libseccomp knows them (the kernel's ABI: asm/unistd_64.h, asm-generic).
X86_64 = seccomp.syscall_names("x86_64")
AARCH64 = seccomp.syscall_names("aarch64")
X86 = AUDIT_X86_64
ARM64 = AUDIT_AARCH64
I386 = AUDIT_I386
ALLOW = RET_ALLOW
KILL_PROCESS = RET_KILL_PROCESS
EPERM = RET_ERRNO | 1
ENOSYS = RET_ERRNO | 38


def program_of(doc: dict, native: str = "x86_64") -> bytes:
    return seccomp.build(seccomp.parse_uncached(doc), native)


def rule(names: list[str], action: str = "SCMP_ACT_ALLOW", **extra: object) -> dict:
    return {"names": names, "action": action, **extra}


def arg(index: int, op: str, value: int, value_two: int | None = None) -> dict:
    out = {"index": index, "value": value, "op": f"SCMP_CMP_{op}"}
    if value_two is not None:
        out["valueTwo"] = value_two
    return out


def deny_by_default(*rules: dict, **extra: object) -> dict:
    return {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": list(rules), **extra}


# -- parsing: every bad field is named ------------------------------------------------------


GOOD_RULE = {"names": ["read"], "action": "SCMP_ACT_ALLOW"}


@pytest.mark.parametrize("doc, field, problem", [
    ("allow", "linux.seccomp", "must be object"),
    ({}, "linux.seccomp.defaultAction", "required"),
    ({"defaultAction": 1}, "linux.seccomp.defaultAction", "must be string"),
    ({"defaultAction": "SCMP_ACT_MAYBE"}, "linux.seccomp.defaultAction", "unknown action"),
    ({"defaultAction": "SCMP_ACT_NOTIFY"}, "linux.seccomp.defaultAction", "seccomp agent"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1},
     "linux.seccomp.defaultErrnoRet", "only for SCMP_ACT_ERRNO"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": "1"},
     "linux.seccomp.defaultErrnoRet", "must be int"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 5000},
     "linux.seccomp.defaultErrnoRet", "between 0 and 4095"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "architectures": "SCMP_ARCH_X86_64"},
     "linux.seccomp.architectures", "must be array"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64", "x86"]},
     "linux.seccomp.architectures[1]", "unknown architecture"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "flags": ["SECCOMP_FILTER_FLAG_NEW_LISTENER"]},
     "linux.seccomp.flags[0]", "seccomp agent"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "flags": ["SECCOMP_FILTER_FLAG_LOG", "FAST"]},
     "linux.seccomp.flags[1]", "unknown flag"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "listenerPath": "/run/agent.sock"},
     "linux.seccomp.listenerPath", "not supported"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "listenerMetadata": "x"},
     "linux.seccomp.listenerMetadata", "not supported"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": {}}, "linux.seccomp.syscalls",
     "must be array"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [GOOD_RULE, "read"]},
     "linux.seccomp.syscalls[1]", "must be object"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]},
     "linux.seccomp.syscalls[0].names", "required"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [rule([])]},
     "linux.seccomp.syscalls[0].names", "at least one"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [rule(["read", 3])]},
     "linux.seccomp.syscalls[0].names[1]", "must be string"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [rule(["read", ""])]},
     "linux.seccomp.syscalls[0].names[1]", "must not be empty"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [GOOD_RULE, GOOD_RULE, GOOD_RULE,
                                                      {"names": ["read"]}]},
     "linux.seccomp.syscalls[3].action", "required"),
    ({"defaultAction": "SCMP_ACT_ERRNO",
      "syscalls": [GOOD_RULE, GOOD_RULE, GOOD_RULE, rule(["read"], "SCMP_ACT_NOTIFY")]},
     "linux.seccomp.syscalls[3].action", "SCMP_ACT_NOTIFY"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [rule(["read"], "ALLOW")]},
     "linux.seccomp.syscalls[0].action", "unknown action"),
    ({"defaultAction": "SCMP_ACT_ERRNO",
      "syscalls": [rule(["read"], "SCMP_ACT_KILL", errnoRet=1)]},
     "linux.seccomp.syscalls[0].errnoRet", "only for SCMP_ACT_ERRNO"),
    ({"defaultAction": "SCMP_ACT_ERRNO",
      "syscalls": [rule(["read"], "SCMP_ACT_ERRNO", errnoRet=-1)]},
     "linux.seccomp.syscalls[0].errnoRet", "between 0 and 4095"),
    ({"defaultAction": "SCMP_ACT_ERRNO",
      "syscalls": [rule(["read"], "SCMP_ACT_TRACE", errnoRet=70000)]},
     "linux.seccomp.syscalls[0].errnoRet", "between 0 and 65535"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [rule(["read"], args={})]},
     "linux.seccomp.syscalls[0].args", "must be array"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [rule(["read"], args=[1])]},
     "linux.seccomp.syscalls[0].args[0]", "must be object"),
    ({"defaultAction": "SCMP_ACT_ERRNO",
      "syscalls": [rule(["read"], args=[arg(0, "EQ", 1), {"value": 1, "op": "SCMP_CMP_EQ"}])]},
     "linux.seccomp.syscalls[0].args[1].index", "required"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [rule(["read"], args=[arg(6, "EQ", 1)])]},
     "linux.seccomp.syscalls[0].args[0].index", "between 0 and 5"),
    ({"defaultAction": "SCMP_ACT_ERRNO",
      "syscalls": [rule(["read"], args=[{"index": 0, "op": "SCMP_CMP_EQ"}])]},
     "linux.seccomp.syscalls[0].args[0].value", "required"),
    ({"defaultAction": "SCMP_ACT_ERRNO",
      "syscalls": [rule(["read"], args=[arg(0, "EQ", 1 << 64)])]},
     "linux.seccomp.syscalls[0].args[0].value", "between 0 and"),
    ({"defaultAction": "SCMP_ACT_ERRNO",
      "syscalls": [rule(["read"], args=[arg(0, "MASKED_EQ", 1, -1)])]},
     "linux.seccomp.syscalls[0].args[0].valueTwo", "between 0 and"),
    ({"defaultAction": "SCMP_ACT_ERRNO",
      "syscalls": [rule(["read"], args=[arg(0, "EQ", True)])]},
     "linux.seccomp.syscalls[0].args[0].value", "must be int"),
    ({"defaultAction": "SCMP_ACT_ERRNO",
      "syscalls": [rule(["read"], args=[{"index": 0, "value": 1}])]},
     "linux.seccomp.syscalls[0].args[0].op", "required"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [rule(["read"], args=[arg(0, "LIKE", 1)])]},
     "linux.seccomp.syscalls[0].args[0].op", "unknown operator"),
])
def test_bad_field_names_the_field(doc, field, problem):
    with pytest.raises(seccomp.ProfileError) as e:
        seccomp.parse(doc)
    assert e.value.field_path == field
    assert problem in e.value.problem


def test_parse_config_reads_the_profile_and_to_json_writes_it_back():
    doc = oci.to_json(oci.Config(args=("true",)))
    assert "seccomp" not in doc["linux"]
    profile = deny_by_default(rule(["read", "write"]), flags=["SECCOMP_FILTER_FLAG_LOG"])
    doc["linux"]["seccomp"] = profile
    config = oci.parse_config(json.loads(json.dumps(doc)))
    assert config.seccomp is not None
    assert config.seccomp.default_action == "SCMP_ACT_ERRNO"
    assert config.seccomp.syscalls[0].names == ("read", "write")
    assert config.seccomp.flags == 2          # SECCOMP_FILTER_FLAG_LOG
    assert len(config.seccomp.program) % 8 == 0
    assert oci.to_json(config)["linux"]["seccomp"] == profile


def test_a_bad_profile_in_config_json_names_its_field():
    doc = oci.to_json(oci.Config(args=("true",)))
    doc["linux"]["seccomp"] = deny_by_default(GOOD_RULE, {"names": ["x"], "action": 7})
    with pytest.raises(oci.ConfigError) as e:
        oci.parse_config(doc)
    assert str(e.value) == "config.json: linux.seccomp.syscalls[1].action: must be string"


def test_parse_keeps_one_compiled_profile_per_document():
    doc = deny_by_default(rule(["read"]), rule(["write"], "SCMP_ACT_LOG"))
    first = seccomp.parse(doc)
    again = seccomp.parse(json.loads(json.dumps(doc)))
    assert again is first
    other = seccomp.parse(deny_by_default(rule(["read"])))
    assert other is not first and other.program != first.program


def test_tsync_is_accepted_and_the_other_flags_set_bits():
    profile = seccomp.parse(deny_by_default(flags=[
        "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]))
    assert profile.flags == 2 | 4


# -- the program: actions -------------------------------------------------------------------


@pytest.mark.parametrize("action, errno, expected", [
    ("SCMP_ACT_ALLOW", None, 0x7FFF0000),
    ("SCMP_ACT_LOG", None, 0x7FFC0000),
    ("SCMP_ACT_KILL", None, 0x00000000),          # libseccomp: the thread
    ("SCMP_ACT_KILL_THREAD", None, 0x00000000),
    ("SCMP_ACT_KILL_PROCESS", None, 0x80000000),
    ("SCMP_ACT_TRAP", None, 0x00030000),
    ("SCMP_ACT_ERRNO", None, 0x00050001),         # EPERM unless told
    ("SCMP_ACT_ERRNO", 13, 0x0005000D),
    ("SCMP_ACT_ERRNO", 0, 0x00050000),
    ("SCMP_ACT_TRACE", None, 0x7FF00001),         # runc: EPERM as the message too
    ("SCMP_ACT_TRACE", 4242, 0x7FF01092),
])
def test_each_action_is_the_kernels_return_value(action, errno, expected):
    extra = {} if errno is None else {"errnoRet": errno}
    doc = {"defaultAction": "SCMP_ACT_ALLOW" if action != "SCMP_ACT_ALLOW" else "SCMP_ACT_LOG",
           "syscalls": [rule(["getpid"], action, **extra)]}
    program = program_of(doc)
    assert run_bpf(program, X86_64["getpid"]) == expected
    assert run_bpf(program, X86_64["getppid"]) in (ALLOW, RET_LOG)


def test_default_errno_ret_and_listed_calls():
    program = program_of({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
                          "syscalls": [rule(["read", "write"])]})
    assert run_bpf(program, X86_64["read"]) == ALLOW
    assert run_bpf(program, X86_64["write"]) == ALLOW
    assert run_bpf(program, X86_64["mkdir"]) == ENOSYS
    assert run_bpf(program, 0xFFFFFFFF) == ENOSYS     # nr -1 (a tracer's skip)


def test_unknown_names_are_skipped():
    program = program_of(deny_by_default(rule(["read", "no_such_call", "vm86old"])))
    assert run_bpf(program, X86_64["read"]) == ALLOW


def test_a_rule_with_the_default_action_is_skipped_as_runc_does():
    # An unconditional ERRNO for write equals the default: it must not shadow
    # the argument rule that allows write to fd 1.
    program = program_of(deny_by_default(
        rule(["write"], "SCMP_ACT_ERRNO"),
        rule(["write"], args=[arg(0, "EQ", 1)])))
    assert run_bpf(program, X86_64["write"], args=(1,)) == ALLOW
    assert run_bpf(program, X86_64["write"], args=(2,)) == EPERM


# -- the program: architectures -------------------------------------------------------------


def test_other_architectures_and_x32_are_killed():
    program = program_of({"defaultAction": "SCMP_ACT_ALLOW", "architectures": [
        "SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"], "syscalls": [
        rule(["mkdir"], "SCMP_ACT_ERRNO")]})
    assert run_bpf(program, X86_64["mkdir"]) == EPERM
    assert run_bpf(program, X86_64["getpid"]) == ALLOW
    # i386 (int 0x80) has its own numbers: never the x86_64 rules, never allowed.
    assert run_bpf(program, 39, arch=I386) == KILL_PROCESS
    assert run_bpf(program, X86_64["getpid"], arch=ARM64) == KILL_PROCESS
    # x32 calls are x86_64's arch with bit 30 set in nr, as libseccomp denies them.
    assert run_bpf(program, 0x40000000 | X86_64["getpid"]) == KILL_PROCESS
    assert run_bpf(program, 0x40000000 | X86_64["mkdir"]) == KILL_PROCESS
    assert run_bpf(program, 0xFFFFFFFF) == ALLOW     # nr -1: a tracer's skip, not x32


def test_the_native_architecture_is_always_in_and_aarch64_gets_its_own_numbers():
    doc = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_AARCH64"],
           "syscalls": [rule(["mkdirat", "mkdir"], "SCMP_ACT_ERRNO", errnoRet=13)]}
    program = program_of(doc, native="x86_64")
    assert run_bpf(program, X86_64["mkdir"]) == RET_ERRNO | 13
    assert run_bpf(program, X86_64["mkdirat"]) == RET_ERRNO | 13
    assert run_bpf(program, AARCH64["mkdirat"], arch=ARM64) == RET_ERRNO | 13
    # aarch64's mkdirat (34) is x86_64's nanosleep's neighbour: numbers are per arch.
    assert run_bpf(program, X86_64["mkdirat"], arch=ARM64) == ALLOW
    assert run_bpf(program, AARCH64["mkdirat"]) == ALLOW
    # On an aarch64 machine, x86_64 is not in the filter unless listed.
    native_arm = program_of(doc, native="aarch64")
    assert run_bpf(native_arm, AARCH64["mkdirat"], arch=ARM64) == RET_ERRNO | 13
    assert run_bpf(native_arm, X86_64["mkdir"]) == KILL_PROCESS
    # aarch64 has no x32: bit 30 is just a number there.
    assert run_bpf(native_arm, 0x40000000, arch=ARM64) == ALLOW


# -- the program: arguments -----------------------------------------------------------------

BOUNDARIES = [0, 1, 0xFFFFFFFE, 0xFFFFFFFF, 0x100000000, 0x100000001, 0x1FFFFFFFF,
              0x7FFFFFFFFFFFFFFF, 0x8000000000000000, 0xFFFFFFFF00000000, 0xFFFFFFFFFFFFFFFF]
OPS = {"EQ": lambda a, v: a == v, "NE": lambda a, v: a != v, "LT": lambda a, v: a < v,
       "LE": lambda a, v: a <= v, "GE": lambda a, v: a >= v, "GT": lambda a, v: a > v}


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("value", [0, 1, 0xFFFFFFFF, 0x100000000, 0x123456789,
                                   0xFFFFFFFFFFFFFFFF])
def test_64_bit_comparisons_are_exact_across_both_halves(op, value):
    program = program_of(deny_by_default(rule(["read"], args=[arg(2, op, value)])))
    for argument in BOUNDARIES + [value, value - 1 if value else 0, value + 1 & (1 << 64) - 1]:
        expected = ALLOW if OPS[op](argument, value) else EPERM
        assert run_bpf(program, X86_64["read"], args=(0, 0, argument)) == expected, \
            (op, hex(value), hex(argument))


@pytest.mark.parametrize("mask, datum", [
    (0x7E020000, 0), (0x10000000, 0x10000000), (0xFF00000000, 0x1200000000),
    (0xFFFFFFFFFFFFFFFF, 0x8000000000000001), (0xF0, 0xFF)])
def test_masked_eq_compares_the_masked_argument_with_the_masked_datum(mask, datum):
    program = program_of(deny_by_default(rule(["clone"], args=[arg(0, "MASKED_EQ", mask,
                                                                    datum)])))
    for argument in BOUNDARIES + [datum, datum | 0x10000000, 0x10000011, 0x1200000000,
                                  0x1200000001, 0x3400000000, 0xF0, 0x1F0]:
        expected = ALLOW if argument & mask == datum & mask else EPERM
        assert run_bpf(program, X86_64["clone"], args=(argument,)) == expected, hex(argument)


def test_args_in_one_rule_are_anded():
    program = program_of(deny_by_default(rule(["socket"], args=[
        arg(0, "EQ", 2), arg(1, "MASKED_EQ", 0xF, 1)])))
    assert run_bpf(program, X86_64["socket"], args=(2, 1)) == ALLOW
    assert run_bpf(program, X86_64["socket"], args=(2, 0x80001)) == ALLOW  # SOCK_CLOEXEC
    assert run_bpf(program, X86_64["socket"], args=(2, 2)) == EPERM
    assert run_bpf(program, X86_64["socket"], args=(10, 1)) == EPERM


def test_several_rules_for_one_call_any_match_allows():
    program = program_of(deny_by_default(
        rule(["personality"], args=[arg(0, "EQ", 0)]),
        rule(["personality"], args=[arg(0, "EQ", 8)]),
        rule(["personality"], args=[arg(0, "EQ", 0xFFFFFFFF)])))
    for persona in (0, 8, 0xFFFFFFFF):
        assert run_bpf(program, X86_64["personality"], args=(persona,)) == ALLOW
    for persona in (1, 0x20000, 0xFFFFFFFFFFFFFFFF):
        assert run_bpf(program, X86_64["personality"], args=(persona,)) == EPERM


def test_rules_with_different_actions_first_matching_decides():
    program = program_of({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        rule(["kill"], "SCMP_ACT_ERRNO", errnoRet=3, args=[arg(1, "EQ", 9)]),
        rule(["kill"], "SCMP_ACT_KILL_PROCESS", args=[arg(0, "EQ", 1)])]})
    assert run_bpf(program, X86_64["kill"], args=(5, 9)) == RET_ERRNO | 3
    assert run_bpf(program, X86_64["kill"], args=(1, 9)) == RET_ERRNO | 3
    assert run_bpf(program, X86_64["kill"], args=(1, 15)) == KILL_PROCESS
    assert run_bpf(program, X86_64["kill"], args=(5, 15)) == ALLOW


def test_an_unconditional_rule_wins_over_argument_rules_in_either_order():
    for rules in ([rule(["ioctl"], args=[arg(1, "EQ", 0x5401)]), rule(["ioctl"], "SCMP_ACT_LOG")],
                  [rule(["ioctl"], "SCMP_ACT_LOG"), rule(["ioctl"], args=[arg(1, "EQ", 0x5401)])]):
        program = program_of(deny_by_default(*rules))
        assert run_bpf(program, X86_64["ioctl"], args=(0, 0x5401)) == RET_LOG
        assert run_bpf(program, X86_64["ioctl"], args=(0, 1)) == RET_LOG


def test_the_first_of_two_rules_with_the_same_conditions_decides():
    # libseccomp refuses the second (EEXIST); the profile is still taken, as before.
    for first, second in (("SCMP_ACT_ALLOW", "SCMP_ACT_LOG"), ("SCMP_ACT_LOG", "SCMP_ACT_ALLOW")):
        expected = {"SCMP_ACT_ALLOW": ALLOW, "SCMP_ACT_LOG": RET_LOG}[first]
        program = program_of(deny_by_default(rule(["read"], first), rule(["read"], second)))
        assert run_bpf(program, X86_64["read"]) == expected
        program = program_of(deny_by_default(rule(["read"], first, args=[arg(0, "EQ", 1)]),
                                             rule(["read"], second, args=[arg(0, "EQ", 1)])))
        assert run_bpf(program, X86_64["read"], args=(1,)) == expected
        assert run_bpf(program, X86_64["read"], args=(2,)) == EPERM


def test_the_same_argument_twice_in_a_rule_becomes_two_rules_as_in_runc_and_crun():
    program = program_of(deny_by_default(rule(["read"], args=[
        arg(0, "EQ", 3), arg(0, "EQ", 4)])))
    assert run_bpf(program, X86_64["read"], args=(3,)) == ALLOW
    assert run_bpf(program, X86_64["read"], args=(4,)) == ALLOW
    assert run_bpf(program, X86_64["read"], args=(5,)) == EPERM


# -- the program: size ----------------------------------------------------------------------


def test_long_programs_reach_far_targets_through_ja():
    # Every call with a 64-bit argument rule of its own: thousands of
    # instructions, so the binary search's jumps span far more than 255.
    def limit(nr: int) -> int:
        return (nr << 32) | 0x80000000 | nr

    rules = [rule([name], args=[arg(3, "GT", limit(nr))]) for name, nr in X86_64.items()]
    program = program_of(deny_by_default(*rules))
    assert len(program) // 8 > 2000
    far = [i for i in range(0, len(program), 8) if program[i] == 0x05]  # ja
    assert far, "no long jump was needed?"
    for name, nr in X86_64.items():
        assert run_bpf(program, nr, args=(0, 0, 0, limit(nr) + 1)) == ALLOW, name
        assert run_bpf(program, nr, args=(0, 0, 0, limit(nr))) == EPERM, name
        assert run_bpf(program, nr, args=(0, 0, 0, limit(nr) + (1 << 32))) == ALLOW, name
        if nr:
            assert run_bpf(program, nr, args=(0, 0, 0, limit(nr) - (1 << 32))) == EPERM, name
    assert run_bpf(program, 1000, args=(2000,)) == ENOSYS
    assert run_bpf(program, X86_64["read"], arch=I386) == KILL_PROCESS


def test_too_long_a_program_is_a_config_error():
    # Two 64-bit range comparisons per call, each with values of its own:
    # libseccomp shares nothing and the program outgrows the kernel's limit.
    def limit(nr: int) -> int:
        return (nr << 32) | 0x80000000 | nr

    rules = [rule([name], args=[arg(3, "GT", limit(nr)), arg(4, "LT", limit(nr))])
             for name, nr in X86_64.items()]
    with pytest.raises(seccomp.ProfileError) as e:
        seccomp.parse(deny_by_default(*rules))
    assert e.value.field_path == "linux.seccomp"
    assert "4096" in e.value.problem


def test_a_docker_size_allow_list_is_a_short_search():
    # libseccomp's binary tree (SCMP_FLTATR_CTL_OPTIMIZE 2): a call is judged
    # in a few dozen instructions, not one comparison per listed name.
    names = sorted(X86_64)[:350]
    program = program_of(deny_by_default(rule(names), rule(["personality"],
                                                           args=[arg(0, "EQ", 8)])))
    assert len(program) // 8 < 600
    for name in names:
        verdict, steps = trace(program, X86_64[name])
        assert verdict == ALLOW
        assert steps < 40, (name, steps)


def test_enosys_for_calls_above_every_call_the_profile_names_as_runc():
    program = program_of(deny_by_default(rule(["read", "write", "openat"])))
    assert run_bpf(program, X86_64["openat"]) == ALLOW
    assert run_bpf(program, X86_64["mkdir"]) == EPERM         # below openat: known, denied
    assert run_bpf(program, X86_64["openat"] + 1) == ENOSYS   # newer than the profile
    # Not with a permissive default, nor when the default already is ENOSYS.
    allow = program_of({"defaultAction": "SCMP_ACT_ALLOW",
                        "syscalls": [rule(["read"], "SCMP_ACT_ERRNO")]})
    assert run_bpf(allow, 449) == ALLOW


# -- RuntimeDefault -------------------------------------------------------------------------


def default_program(caps: tuple[str, ...] = tuple(oci.DEFAULT_CAPABILITIES),
                    arch: str = "x86_64") -> bytes:
    """RuntimeDefault compiled as on a machine of `arch`."""
    return program_of(seccomp.runtime_default(caps, arch), native=arch)


def test_runtime_default_allows_ordinary_calls():
    program = default_program()
    for name in ("read", "write", "openat", "execve", "mkdir", "mmap", "futex", "wait4",
                 "socket", "bind", "chown", "setuid", "capset", "prctl", "seccomp", "exit_group"):
        assert run_bpf(program, X86_64[name]) == ALLOW, name
    assert run_bpf(program, X86_64["clone"], args=(0x1200011,)) == ALLOW   # fork's flags
    assert run_bpf(program, X86_64["clone"], args=(0x3D0F00,)) == ALLOW    # a thread's
    for persona in seccomp_default.PERSONAS:
        assert run_bpf(program, X86_64["personality"], args=(persona,)) == ALLOW


def test_runtime_default_denies_what_docker_documents_as_blocked():
    program = default_program()
    for name in ("mount", "umount2", "pivot_root", "unshare", "setns", "init_module",
                 "kexec_load", "reboot", "bpf", "perf_event_open", "ptrace", "keyctl",
                 "add_key", "swapon", "settimeofday", "clock_settime", "iopl",
                 "open_by_handle_at", "userfaultfd", "fsopen", "fsmount", "move_mount",
                 "open_tree", "io_uring_setup", "process_vm_readv", "acct"):
        assert run_bpf(program, X86_64[name]) == EPERM, name
    for flag in seccomp_default.CLONE_NAMESPACE_FLAGS:
        assert run_bpf(program, X86_64["clone"], args=(flag | 17,)) == EPERM, hex(flag)
    assert run_bpf(program, X86_64["clone3"]) == ENOSYS
    assert run_bpf(program, X86_64["personality"], args=(0x4000000,)) == ENOSYS  # BSD
    assert run_bpf(program, 460) == ENOSYS          # newer than the table
    assert run_bpf(program, 39, arch=I386) == KILL_PROCESS
    assert run_bpf(program, 0x40000000 | 39) == KILL_PROCESS


def test_runtime_default_lets_a_capability_through_what_the_kernel_checks_it_for():
    program = default_program(tuple(oci.DEFAULT_CAPABILITIES) + ("CAP_SYS_ADMIN",
                                                                 "CAP_SYS_PTRACE"))
    for name in ("mount", "unshare", "setns", "fsopen", "ptrace", "bpf"):
        assert run_bpf(program, X86_64[name]) == ALLOW, name
    assert run_bpf(program, X86_64["clone"], args=(0x10000000 | 17,)) == ALLOW
    for name in ("keyctl", "io_uring_setup", "reboot", "kexec_load"):
        assert run_bpf(program, X86_64[name]) == EPERM, name


def test_runtime_default_on_aarch64():
    program = default_program(arch="aarch64")
    assert run_bpf(program, AARCH64["mkdirat"], arch=ARM64) == ALLOW
    assert run_bpf(program, AARCH64["mount"], arch=ARM64) == EPERM
    assert run_bpf(program, AARCH64["read"], arch=X86) == KILL_PROCESS
    doc = seccomp.runtime_default(oci.DEFAULT_CAPABILITIES, "aarch64")
    assert doc["architectures"] == ["SCMP_ARCH_AARCH64"]
    listed = {n for entry in doc["syscalls"] for n in entry["names"]}
    assert listed <= set(AARCH64)


def test_runtime_default_names_only_calls_of_the_table():
    doc = seccomp.runtime_default(oci.DEFAULT_CAPABILITIES, "x86_64")
    listed = [n for entry in doc["syscalls"] for n in entry["names"]]
    assert set(listed) <= set(X86_64)
    allowed = set(doc["syscalls"][0]["names"])
    assert not allowed & {"mount", "clone", "clone3", "personality", "keyctl"}


# -- loading: at runc's point ---------------------------------------------------------------


def test_load_seccomp_before_the_drop_without_no_new_privs_and_last_with_it():
    profile = seccomp.parse(deny_by_default(rule(["read"]), flags=["SECCOMP_FILTER_FLAG_LOG"]))
    for no_new_privs, at in ((True, True), (False, False)):
        config = oci.Config(args=("true",), no_new_privileges=no_new_privs, seccomp=profile)
        fake = sc.RecordingSyscalls()
        load_seccomp(fake, config, right_before_exec=not at)
        assert fake.calls == []
        load_seccomp(fake, config, right_before_exec=at)
        assert fake.calls == [("seccomp", profile.program, 2)]
    fake = sc.RecordingSyscalls()
    for at in (True, False):
        load_seccomp(fake, oci.Config(args=("true",)), right_before_exec=at)
    assert fake.calls == []


# -- the agent: securityContext.seccompProfile -> linux.seccomp ---------------------------


def test_the_agent_turns_the_workload_field_into_the_profile():
    from mctl.agent.bundle.config import BundleError, seccomp_profile

    caps = tuple(oci.DEFAULT_CAPABILITIES)
    for choice in ("", "RuntimeDefault"):
        profile = seccomp_profile(choice, caps)
        assert profile is not None
        assert profile.doc == seccomp.runtime_default(caps, seccomp.native_arch())
    assert seccomp_profile("Unconfined", caps) is None
    with pytest.raises(BundleError, match="unknown profile 'Localhost'"):
        seccomp_profile("Localhost", caps)


def test_the_zygotes_warm_profile_is_what_a_bundle_written_by_the_agent_loads(tmp_path):
    from mctl.agent.runtime.zygote import warm_seccomp

    seccomp_program._cache.clear()  # noqa: SLF001
    warm_seccomp()
    assert len(seccomp_program._cache) == 1  # noqa: SLF001
    warm = next(iter(seccomp_program._cache.values()))  # noqa: SLF001
    doc = seccomp.runtime_default(oci.DEFAULT_CAPABILITIES, seccomp.native_arch())
    oci.write_config(str(tmp_path), oci.Config(args=("true",), seccomp=seccomp.parse(doc)))
    assert oci.load_config(str(tmp_path)).seccomp is warm


def test_mctl_runtime_keeps_built_programs_on_disk(tmp_path, monkeypatch):
    doc = {"defaultAction": "SCMP_ACT_ERRNO",
           "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}]}
    cache = str(tmp_path / "seccomp@cache")
    monkeypatch.setattr(seccomp_program, "_cache", {})
    built = seccomp.parse(doc, disk_cache=cache)
    [name] = os.listdir(cache)
    assert os.stat(cache).st_mode & 0o777 == 0o700
    assert os.stat(os.path.join(cache, name)).st_mode & 0o777 == 0o600

    # A new process (an empty memory cache) reads the program instead of building it.
    monkeypatch.setattr(seccomp_program, "_cache", {})

    def no_build(*args):
        raise AssertionError("built again")

    monkeypatch.setattr(seccomp_program, "build", no_build)
    assert seccomp.parse(doc, disk_cache=cache).program == built.program

    # A torn file is not trusted: the program is built again and rewritten.
    with open(os.path.join(cache, name), "wb") as f:
        f.write(built.program[:5])
    monkeypatch.undo()
    monkeypatch.setattr(seccomp_program, "_cache", {})
    assert seccomp.parse(doc, disk_cache=cache).program == built.program
    with open(os.path.join(cache, name), "rb") as f:
        assert f.read() == built.program


def test_the_disk_cache_is_bounded(tmp_path, monkeypatch):
    cache = str(tmp_path / "c")
    monkeypatch.setattr(seccomp_program, "DISK_CACHE_FILES", 3)
    for i in range(5):
        monkeypatch.setattr(seccomp_program, "_cache", {})
        seccomp.parse({"defaultAction": "SCMP_ACT_ALLOW",
                       "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                     "errnoRet": i + 1}]}, disk_cache=cache)
    assert len([n for n in os.listdir(cache) if n.endswith(".bpf")]) == 3

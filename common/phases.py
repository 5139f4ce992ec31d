"""Replica phases and reasons: the enums of types.proto, as users read them.

A replica's phase and the reason for it travel and are stored as the
`ReplicaPhase` and `ReplicaReason` enums (types.proto); the agent sets them,
the scheduler merges and decides on them, the CLI prints them. Users (tables,
`describe`, events, `-o json`) see the names SPEC.md gives, which are the
enum names without their prefix in CamelCase: REPLICA_PHASE_RUNNING is
`Running`, REPLICA_REASON_CRASH_LOOP_BACK_OFF is `CrashLoopBackOff`. This
module is the one place that spells them.

An unset phase (UNSPECIFIED) reads as Pending, as an empty string did before
the enums: nobody has reported on the replica yet. An unset reason reads "".
"""

from __future__ import annotations

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from mctl.v1 import types_pb2

# Words that are acronyms keep their capitals (OOMKilled, not OomKilled).
_ACRONYMS = frozenset({"OOM"})

# A replica in one of these phases holds no container any more: its resources
# and host ports are free again.
TERMINAL = frozenset({types_pb2.REPLICA_PHASE_SUCCEEDED, types_pb2.REPLICA_PHASE_FAILED})


def _display_names(enum: EnumTypeWrapper, prefix: str) -> dict[int, str]:
    names = {}
    for name, number in enum.items():
        words = name.removeprefix(prefix).split("_")
        names[number] = "".join(w if w in _ACRONYMS else w.capitalize() for w in words)
    return names


_PHASE_NAMES = _display_names(types_pb2.ReplicaPhase, "REPLICA_PHASE_")
_PHASE_NAMES[types_pb2.REPLICA_PHASE_UNSPECIFIED] = _PHASE_NAMES[types_pb2.REPLICA_PHASE_PENDING]
_REASON_NAMES = _display_names(types_pb2.ReplicaReason, "REPLICA_REASON_")
_REASON_NAMES[types_pb2.REPLICA_REASON_UNSPECIFIED] = ""


def phase_name(phase: int) -> str:
    """`Running` for REPLICA_PHASE_RUNNING; `Pending` when unset."""
    # A newer peer may send a phase this version does not know: show its number
    # rather than fail.
    return _PHASE_NAMES.get(phase) or f"Phase{phase}"


def reason_name(reason: int) -> str:
    """`OOMKilled` for REPLICA_REASON_OOM_KILLED; "" when unset."""
    name = _REASON_NAMES.get(reason)
    return name if name is not None else f"Reason{reason}"


def is_terminal(phase: int) -> bool:
    return phase in TERMINAL

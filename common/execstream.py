"""The opening of an exec stream, checked the same way by scheduler and agent."""

from __future__ import annotations

from collections.abc import Iterator

from mctl.v1 import control_pb2

BAD_START = "exec: the first message must name the replica and the command"


def take_start(inputs: Iterator[control_pb2.ExecInput]) -> control_pb2.ExecInput | None:
    """The stream's first message if it says what to run and where, else None."""
    first = next(inputs, None)
    if first is None or not first.HasField("start") or not first.start.command:
        return None
    return first

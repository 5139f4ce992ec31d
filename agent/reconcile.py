"""What the node must do to match the scheduler's desired set: a pure function.

`plan(desired, observed, now_ms)` compares the replicas the node should run
with the containers it has and returns actions. It is level-triggered: run it
on any change or on a timer, as often as you like; on unchanged input it
returns the same actions, and once the node matches, none.

Restarts follow the replica's restartPolicy on the node, with an exponential
back-off like the kubelet's CrashLoopBackOff (here 1 s doubling to 60 s, so
a demo of a crashing replica shows its restarts quickly); the back-off starts
again once a container has run for RESET_AFTER_MS.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

BACKOFF_BASE_MS = 1_000
BACKOFF_MAX_MS = 60_000
RESET_AFTER_MS = 10 * 60_000


class Do(Enum):
    CREATE = "create"      # make the bundle and start it
    RESTART = "restart"    # the container exited and its policy says run it again
    REMOVE = "remove"      # stop (TERM, grace, KILL) and remove every trace
    REPLACE = "replace"    # a different replica (uid) or spec under the same name: remove


@dataclass(frozen=True)
class Want:
    """A replica the node should run."""

    uid: str
    spec_hash: str
    restart_policy: str


@dataclass(frozen=True)
class Have:
    """A container the node has."""

    uid: str
    spec_hash: str
    busy: bool                 # a stop is in progress
    exited: bool
    exit_code: int
    finished_ms: int
    started_ms: int
    restarts: int


@dataclass(frozen=True)
class Action:
    do: Do
    id: str


def backoff_ms(restarts: int) -> int:
    return min(BACKOFF_BASE_MS << min(restarts, 16), BACKOFF_MAX_MS)


def should_restart(policy: str, exit_code: int) -> bool:
    if policy == "Never":
        return False
    if policy == "OnFailure":
        return exit_code != 0
    return True  # Always, and the default


def restart_due_ms(have: Have) -> int:
    """When an exited container may run again."""
    ran = have.finished_ms - have.started_ms
    step = 0 if ran >= RESET_AFTER_MS else have.restarts
    return have.finished_ms + backoff_ms(step)


def plan(desired: Mapping[str, Want], observed: Mapping[str, Have], now_ms: int) -> list[Action]:
    actions = []
    for cid, have in sorted(observed.items()):
        if have.busy:
            continue
        want = desired.get(cid)
        if want is None:
            actions.append(Action(Do.REMOVE, cid))
        elif want.uid != have.uid or want.spec_hash != have.spec_hash:
            actions.append(Action(Do.REPLACE, cid))
        elif (have.exited and should_restart(want.restart_policy, have.exit_code)
              and now_ms >= restart_due_ms(have)):
            actions.append(Action(Do.RESTART, cid))
    for cid in sorted(desired):
        if cid not in observed:
            actions.append(Action(Do.CREATE, cid))
    return actions

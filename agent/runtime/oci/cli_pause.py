"""`mctl-runtime pause` and `resume`: freeze and thaw a container's processes (cgroups/freezer.py).

As runc: only a running (or created) container can be paused and only a
paused one resumed; `state` then says "paused". A paused container can
still be killed and deleted with --force (cli.py thaws it so the kill
lands).
"""

from __future__ import annotations

from . import cli_state

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .cli_args import Invocation


class PauseError(Exception):
    """The container is in the wrong state, or the freezer failed; one line."""


def pause(inv: Invocation) -> None:
    from ..cgroups import CgroupError, detect, freezer

    c = cli_state.load(inv.root, inv.id)
    status = c.status()
    if status not in (cli_state.RUNNING, cli_state.CREATED):
        raise PauseError(f"cannot pause container {inv.id}: it is {status}, not running")
    try:
        freezer.freeze(detect(), c.cgroup)
    except (OSError, CgroupError) as e:
        raise PauseError(f"cannot pause container {inv.id}: {e}") from None


def resume(inv: Invocation) -> None:
    from ..cgroups import CgroupError, detect, freezer

    c = cli_state.load(inv.root, inv.id)
    status = c.status()
    if status != cli_state.PAUSED:
        raise PauseError(f"cannot resume container {inv.id}: it is {status}, not paused")
    try:
        freezer.thaw(detect(), c.cgroup)
    except (OSError, CgroupError) as e:
        raise PauseError(f"cannot resume container {inv.id}: {e}") from None

"""The log of a replica's previous container, for `mctl logs --previous`.

A replica restarts in place (same bundle, same name). Before its next run
starts, the ended run's log files (`container.log` and its rotated `.N`)
are renamed to `previous.log` and `previous.log.N`, replacing the ones
before: as the kubelet keeps the last terminated container's log, exactly
one previous log is kept per replica, bounded by the same size and file
count as the current one (runtime/containerlog_writer.py). It lives in the
bundle, so it goes when the replica is removed. The current log then starts
empty with the new run, as `kubectl logs` shows only the current container.
"""

from __future__ import annotations

import os

from mctl.common.containerlog import rotated_paths

from .runtime.state import LOG_FILE

PREVIOUS_LOG_FILE = "previous.log"


def keep_previous(bundle: str) -> bool:
    """Makes the ended run's log the previous one; False if it left none (it did not start)."""
    current = os.path.join(bundle, LOG_FILE)
    if not os.path.exists(current):
        return False        # the older previous log stays: still the last run that wrote
    previous = os.path.join(bundle, PREVIOUS_LOG_FILE)
    for path in rotated_paths(previous):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    # Oldest first, the current file last: a reader of `previous.log` never
    # finds its name before the whole chain is in place.
    for path in rotated_paths(current):
        os.replace(path, previous + path[len(current):])
    return True

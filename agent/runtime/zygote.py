"""The zygote: a small single-threaded process that forks container monitors.

The agent is a gRPC server with many threads, and fork(2) in a threaded
process copies locks that other threads may hold, so the agent never forks
containers itself. At start-up it spawns this zygote, which imports only what
container start needs, and asks it over a SOCK_SEQPACKET socket pair to start
a bundle. The zygote forks a monitor (monitor.py) per container, waits for
the monitor's start report and passes it back. Warm imports and a small
address space keep each fork cheap, which is what makes in-agent start fast.

The zygote dies with the agent (PR_SET_PDEATHSIG); monitors do not: they
belong to no agent and are adopted by the next one. SIGCHLD is ignored here,
so the kernel reaps monitors that exit while the zygote lives.

Protocol: one JSON request per message, `{"bundle": DIR, "id": ID}` plus
`"runtime": [argv...]` when an OCI runtime command realizes the bundle
(ociclient.py) and `"log": {"max_size": N, "max_files": M}` for the
container log's rotation (crilog.py); one reply per request, the monitor's
StartResult as JSON.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

from . import monitor
from . import syscalls as sc
from .capabilities import last_cap
from .cgroups import detect
from .crilog import LogLimits
from .oci import ConfigError, load_config


def serve(sock: socket.socket, cgroup_root: str) -> None:
    libc = sc.libc()
    cgroups = detect(cgroup_root)
    cap_top = last_cap()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    while True:
        try:
            msg = sock.recv(65536)
        except InterruptedError:
            continue
        if not msg:
            return
        request = json.loads(msg)
        bundle, container_id = request["bundle"], request["id"]
        runtime = request.get("runtime")  # an OCI runtime command's argv, or native
        try:
            config = load_config(bundle)
            log_limits = LogLimits(**request.get("log", {}))
        except (ConfigError, ValueError, TypeError) as e:
            sock.send(monitor.StartResult(0, 0, str(e)).to_bytes())
            continue
        report_r, report_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            sock.close()
            os.close(report_r)
            monitor.run(libc, cgroups, bundle, container_id, config, report_w, cap_top, runtime,
                        log_limits)
        os.close(report_w)
        report = monitor.read_all(report_r)
        os.close(report_r)
        if not report:
            report = monitor.StartResult(pid, 0, "monitor exited before reporting").to_bytes()
        sock.send(report)


def main() -> None:
    fd = int(sys.argv[1])
    cgroup_root = sys.argv[2] if len(sys.argv) > 2 else "/sys/fs/cgroup"
    parent = os.getppid()
    sc.libc().prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the agent died before the prctl took effect
        os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    serve(sock, cgroup_root)


if __name__ == "__main__":
    main()

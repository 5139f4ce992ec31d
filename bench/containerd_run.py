"""`ctr run --rm` and `ctr task exec` through containerd's runc shim: mctl-runtime against runc.

    .venv/bin/python bench/containerd_run.py [--runs 20] [--warmup 2]

Not a test; needs root and containerd (Debian's: `apt-get install
containerd`). A containerd of the benchmark's own (tests/containerd_daemon.py:
config, state, socket and the runtimes' roots in a temporary directory, the
busybox-static image imported from an OCI archive), then, the runtimes
taking turns within each run so drift hits them alike:

1. `ctr run --rm IMAGE ID true`, from spawn to exit: ctr asks containerd,
   which starts a shim, which runs the runtime's create, start, (the
   process exits), delete; then ctr removes the container and snapshot.
   Most of it is containerd's and the shim's, the same for both runtimes.
2. `ctr task exec --exec-id X ID true` on a running `sleep` container: the
   shim runs `exec --process FILE --detach --pid-file F`, waits for the
   exit and reports it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

from _common import Cleanup, Table, check_leftovers, print_header, temp_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from containerd_daemon import IMAGE, Containerd, oci_archive  # noqa: E402

from mctl.agent.runtime.oci import client as ociclient  # noqa: E402

RUNTIMES = ("mctl-runtime", "runc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root")
    if not all(shutil.which(p) for p in ("containerd", "ctr", "containerd-shim-runc-v2")):
        sys.exit("containerd is not installed (apt-get install containerd)")
    run_containerd_existed = os.path.exists("/run/containerd")
    parent = f"mctl/bench-containerd-{secrets.token_hex(3)}"
    print_header("containerd's runc shim: mctl-runtime against runc")
    with Cleanup() as stack:
        tmp = temp_dir(stack, "containerd")
        ctd = Containerd(str(tmp), parent)
        runtimes = [r for r in RUNTIMES if ctd.binaries[r]]

        def stop() -> None:
            for cid in ctd("container", "list", "--quiet", check=False).stdout.split():
                ctd.remove(cid)
            ctd.stop()
            ociclient.remove_empty_cgroups(parent)
            if not run_containerd_existed:
                shutil.rmtree("/run/containerd", ignore_errors=True)
        stack.callback(stop)
        ctd.start()
        oci_archive(f"{tmp}/image.tar")
        ctd("images", "import", f"{tmp}/image.tar")

        samples: dict[str, list[float]] = defaultdict(list)
        for i in range(args.warmup + args.runs):
            for runtime in runtimes:
                cid = f"b{secrets.token_hex(4)}"
                t0 = time.perf_counter()
                ctd("run", "--rm", *ctd.run_options(runtime, cid), IMAGE, cid, "true")
                if i >= args.warmup:
                    samples[runtime].append((time.perf_counter() - t0) * 1000)
        table = Table("ctr run --rm IMAGE ID true (spawn to exit)", "ms")
        for runtime in runtimes:
            table.add(runtime, samples[runtime])
        table.ratio("mctl-runtime / runc", "mctl-runtime", "runc")

        execs: dict[str, list[float]] = defaultdict(list)
        sleepers = {}
        for runtime in runtimes:
            cid = sleepers[runtime] = f"s{secrets.token_hex(4)}"
            ctd("run", "--detach", *ctd.run_options(runtime, cid), IMAGE, cid, "sleep", "600")
        for i in range(args.warmup + args.runs):
            for runtime in runtimes:
                t0 = time.perf_counter()
                ctd("task", "exec", "--exec-id", f"e{i}", sleepers[runtime], "true")
                if i >= args.warmup:
                    execs[runtime].append((time.perf_counter() - t0) * 1000)
        table = Table("ctr task exec --exec-id X ID true (spawn to exit)", "ms")
        for runtime in runtimes:
            table.add(runtime, execs[runtime])
        table.ratio("mctl-runtime / runc", "mctl-runtime", "runc")
        for cid in sleepers.values():
            ctd.remove(cid)
    check_leftovers([str(tmp)], ["bench-containerd-"])


if __name__ == "__main__":
    main()

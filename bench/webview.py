"""What the web view costs the scheduler: memory, and CPU while a page is open.

    .venv/bin/python bench/webview.py [--samples 5] [--replicas 20] [--seconds 30]

Not a test; needs root. On a local 1-node cluster (`mctl cluster up` in a
temporary --dir and MCTL_HOME) running one busybox workload of --replicas
replicas, the scheduler is measured three ways, each after a restart with
the argv `cluster up` recorded:

1. without --web-listen (the daemon's default): RSS and PSS, and CPU
   seconds over --seconds while idle;
2. with --web-listen (as `cluster up` starts it) and no page open: the
   same (the feed samples usage every 5 s; nothing else runs);
3. with one page's event stream open (a client reading /events with the
   token): CPU seconds over --seconds and the bytes the stream carried.
"""

from __future__ import annotations

import argparse
import http.client
import threading
import time
from collections import Counter

from _common import (
    Cleanup,
    LocalCluster,
    Table,
    check_leftovers,
    cpu_seconds,
    memory_of,
    print_header,
    temp_dir,
    workload_yaml,
)

MiB = 2**20
SETTLE = 8.0
WEB_FLAGS = ("--web-listen", "--web-token-file")


def restart_scheduler(cluster: LocalCluster, web: bool, saved: list[str]) -> None:
    """Restarts the scheduler with or without the web flags `cluster up` gave it."""
    def change(argv: list[str]) -> None:
        if not saved:
            for flag in WEB_FLAGS:
                i = argv.index(flag)
                saved.extend(argv[i:i + 2])
        for flag in WEB_FLAGS:
            if flag in argv:
                i = argv.index(flag)
                del argv[i:i + 2]
        if web:
            argv.extend(saved)

    cluster.restart_changed("scheduler", change, b"scheduler ready")
    time.sleep(SETTLE)


def measure(cluster: LocalCluster, samples: int, seconds: float) -> tuple[list[int], list[int],
                                                                            float]:
    pid = cluster.pid("scheduler")
    rss, pss = [], []
    for _ in range(samples):
        r, p = memory_of(pid)
        rss.append(r)
        pss.append(p)
        time.sleep(1)
    start = cpu_seconds(pid)
    time.sleep(seconds)
    return rss, pss, cpu_seconds(pid) - start


def stream_for(address: str, token: str, seconds: float, counts: Counter[str]) -> int:
    """Reads the event stream as a page would for `seconds`; the bytes it carried
    (`counts`: how many of each kind of message)."""
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=15)
    conn.request("GET", "/events", headers={"Authorization": f"Bearer {token}"})
    reply = conn.getresponse()
    assert reply.status == 200, reply.status
    got = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = reply.fp.readline()
        if not line:
            break
        got += len(line)
        if line.startswith(b"event: "):
            counts[line[7:].strip().decode()] += 1
    conn.close()
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    print_header("bench/webview.py: the scheduler without and with the web view")
    with Cleanup() as stack:
        base = temp_dir(stack, "webview")
        cluster = LocalCluster(stack, base, 1)
        spec = base / "w.yaml"
        spec.write_text(workload_yaml("sleepers", args.replicas))
        cluster.mctl("apply", "-f", str(spec), "--wait", timeout=300)
        saved: list[str] = []
        restart_scheduler(cluster, False, saved)
        off_rss, off_pss, off_cpu = measure(cluster, args.samples, args.seconds)
        restart_scheduler(cluster, True, saved)
        on_rss, on_pss, on_cpu = measure(cluster, args.samples, args.seconds)
        address = saved[1]
        token = open(saved[3]).read().strip()
        carried: list[int] = []
        pid = cluster.pid("scheduler")
        counts: Counter[str] = Counter()
        reader = threading.Thread(target=lambda: carried.append(
            stream_for(address, token, args.seconds, counts)))
        start = cpu_seconds(pid)
        reader.start()
        reader.join()
        page_cpu = cpu_seconds(pid) - start
        page_rss, page_pss = memory_of(pid)
        table = Table(f"scheduler, 1 node, {args.replicas} replicas ({args.samples} samples)",
                      "MiB", width=50)
        table.add("without --web-listen: RSS", [r / MiB for r in off_rss])
        table.add("with --web-listen, no page open: RSS", [r / MiB for r in on_rss])
        table.add("without --web-listen: PSS", [p / MiB for p in off_pss])
        table.add("with --web-listen, no page open: PSS", [p / MiB for p in on_pss])
        table.add("with one page open (after it): RSS", [page_rss / MiB])
        cpu = Table(f"scheduler CPU over {args.seconds:.0f} s", "% of a core", width=50)
        cpu.add("without --web-listen, idle", [100 * off_cpu / args.seconds])
        cpu.add("with --web-listen, no page open", [100 * on_cpu / args.seconds])
        cpu.add("with one page's stream open", [100 * page_cpu / args.seconds])
        cpu.note(f"the stream carried {carried[0] if carried else 0} bytes in "
                 f"{args.seconds:.0f} s: " + ", ".join(f"{n} {kind}"
                                                      for kind, n in sorted(counts.items())))
        cluster_id = cluster.id
    check_leftovers([str(base)], [cluster_id])


if __name__ == "__main__":
    main()

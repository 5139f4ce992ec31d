"""What a seccomp profile costs a container start: checking, building, the cache.

    .venv/bin/python bench/seccomp_cost.py [--runs 200]

Not a test. In-process timings (medians and minimums, microseconds) of:

- build: seccomp.parse with an empty cache, i.e. checking the profile and
  having libseccomp build its BPF program, for the agent's RuntimeDefault
  (every call libseccomp knows on this machine but ~70, with argument rules
  for clone and personality) and for a Docker-size allow-list (every name,
  ~370, plus argument rules), as `mctl-runtime run` pays once per process;
- cached: seccomp.parse of a document built before (a JSON dump of the
  profile as the key, a dictionary lookup), what the zygote pays per start
  once it has built the profile (it warms RuntimeDefault at start-up);
- load_config: oci.load_config of a bundle's config.json with and without
  RuntimeDefault, cache warm: the whole per-start parse in the zygote;
- libseccomp: what opening the library and building the first program cost
  a fresh process (as `mctl-runtime run` pays it), in time and in resident
  memory (VmRSS before and after, in a child interpreter).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from mctl.agent.runtime import seccomp
from mctl.agent.runtime.oci import config as oci
from mctl.agent.runtime.seccomp import program as seccomp_program
from mctl.agent.runtime.seccomp.default import PERSONAS, SCMP_ARCH

# Run in a fresh interpreter: the cost of the first build, library load included.
_FIRST_BUILD = """
import time
from mctl.agent.runtime import seccomp
from mctl.agent.runtime.oci.config import DEFAULT_CAPABILITIES
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
arch = seccomp.native_arch()
before = rss()
t0 = time.perf_counter_ns()
seccomp.parse(seccomp.runtime_default(DEFAULT_CAPABILITIES, arch))
print((time.perf_counter_ns() - t0) / 1000, rss() - before)
"""


def timed(fn, runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1000)
    return statistics.median(samples), min(samples)


def docker_size(arch: str) -> dict:
    names = sorted(seccomp.syscall_names(arch))
    return {"defaultAction": "SCMP_ACT_ERRNO", "architectures": [SCMP_ARCH[arch]],
            "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}] + [
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}]}
                for v in PERSONAS]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=200)
    args = p.parse_args()
    arch = seccomp.native_arch()
    profiles = {
        "RuntimeDefault": seccomp.runtime_default(oci.DEFAULT_CAPABILITIES, arch),
        "Docker-size allow-list": docker_size(arch),
    }
    print(f"{'':<36} {'build':>16} {'cached':>14} {'instructions':>13}")
    for name, doc in profiles.items():
        names = sum(len(e["names"]) for e in doc["syscalls"])

        def uncached(doc: dict = doc) -> None:
            seccomp_program._cache.clear()  # noqa: SLF001 - the point is to measure a miss
            seccomp.parse(doc)

        build_med, build_min = timed(uncached, args.runs)
        profile = seccomp.parse(doc)
        cached_med, cached_min = timed(lambda doc=doc: seccomp.parse(doc), args.runs * 5)
        print(f"{name + f' ({names} names)':<36} {build_med:>8.0f} ({build_min:>4.0f}) "
              f"{cached_med:>7.0f} ({cached_min:>3.0f}) {len(profile.program) // 8:>13}")
    with tempfile.TemporaryDirectory(prefix="mctl-bench-") as tmp:
        for label, profile in (("without seccomp", None),
                               ("with RuntimeDefault", seccomp.parse(profiles["RuntimeDefault"]))):
            bundle = os.path.join(tmp, label.replace(" ", "-"))
            os.makedirs(bundle)
            oci.write_config(bundle, oci.Config(args=("true",), mounts=tuple(oci.default_mounts()),
                                                seccomp=profile))
            med, low = timed(lambda bundle=bundle: oci.load_config(bundle), args.runs * 5)
            print(f"load_config {label:<24} {med:>8.0f} ({low:>4.0f}) us")
    firsts = []
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", _FIRST_BUILD], check=True,
                             capture_output=True, text=True).stdout.split()
        firsts.append((float(out[0]), int(out[1])))
    print(f"first build in a fresh process (libseccomp opened): "
          f"{statistics.median(t for t, _ in firsts):>8.0f} us, "
          f"RSS +{statistics.median(k for _, k in firsts)} KiB")
    print("(microseconds: median (min))")


if __name__ == "__main__":
    main()

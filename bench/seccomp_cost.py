"""What a seccomp profile costs a container start: parsing, compiling, the cache.

    .venv/bin/python bench/seccomp_cost.py [--runs 200]

Not a test. In-process timings (medians and minimums, microseconds) of:

- compile: seccomp.parse with an empty cache, i.e. checking and compiling
  the profile to BPF, for the agent's RuntimeDefault (every call of the
  native table but ~70, with argument rules for clone and personality) and
  for a Docker-size allow-list (every name of the table, ~360, plus
  argument rules), as `mctl-runtime run` pays once per process;
- cached: seccomp.parse of a document compiled before (a JSON dump of the
  profile as the key, a dictionary lookup), what the zygote pays per start
  once it has compiled the profile (it warms RuntimeDefault at start-up);
- load_config: oci.load_config of a bundle's config.json with and without
  RuntimeDefault, cache warm: the whole per-start parse in the zygote.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from mctl.agent.runtime import oci, seccomp, seccomp_default
from mctl.agent.runtime.seccomp_tables import TABLES


def timed(fn, runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1000)
    return statistics.median(samples), min(samples)


def docker_size(arch: str) -> dict:
    names = sorted(TABLES[arch])
    return {"defaultAction": "SCMP_ACT_ERRNO", "architectures": [seccomp_default.SCMP_ARCH[arch]],
            "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}] + [
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}]}
                for v in seccomp_default.PERSONAS]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=200)
    args = p.parse_args()
    arch = seccomp.native_arch()
    profiles = {
        "RuntimeDefault": seccomp_default.runtime_default(oci.DEFAULT_CAPABILITIES, arch),
        "Docker-size allow-list": docker_size(arch),
    }
    print(f"{'':<36} {'compile':>16} {'cached':>14} {'instructions':>13}")
    for name, doc in profiles.items():
        names = sum(len(e["names"]) for e in doc["syscalls"])

        def uncached(doc: dict = doc) -> None:
            seccomp._cache.clear()  # noqa: SLF001 - the point is to measure a miss
            seccomp.parse(doc)

        compile_med, compile_min = timed(uncached, args.runs)
        profile = seccomp.parse(doc)
        cached_med, cached_min = timed(lambda doc=doc: seccomp.parse(doc), args.runs * 5)
        print(f"{name + f' ({names} names)':<36} {compile_med:>8.0f} ({compile_min:>4.0f}) "
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
    print("(microseconds: median (min))")


if __name__ == "__main__":
    main()

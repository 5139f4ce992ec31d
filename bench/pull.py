"""What an image pull costs the agent, against `skopeo copy` of the same image.

    .venv/bin/python bench/pull.py [--runs 5] [--mib 30]

Not a test. A registry (Debian's docker-registry, TLS from a CA of its own,
htpasswd auth: tests/registry.py) on loopback holds a 3-layer image of
about --mib MiB of random (incompressible) data, and a second image sharing
its two bottom layers. Timed, in process, each on fresh stores:

- reference: `skopeo copy docker://... oci:DIR` to an empty directory, the
  network and digest checks only (what the agent's pull runs first);
- pull to 1 node: the agent's Puller.pull: skopeo copy, then the import
  (every layer decompressed, checked against its diff id and unpacked);
- pull to 3 nodes at once: three stores pulling concurrently, against three
  concurrent `skopeo copy` (on one machine both share the CPUs and disk);
- second pull sharing layers: bytes fetched, and layers unpacked, when the
  first image is on the node (aim: only the new layer).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from _common import Cleanup, Table, check_leftovers, print_header, temp_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import imagebuild as ib  # noqa: E402
from registry import Registry  # noqa: E402

from mctl.agent.images.importer import ImageImporter  # noqa: E402
from mctl.agent.images.pull import Puller, RegistryConfig  # noqa: E402
from mctl.agent.images.store import ImageStore  # noqa: E402
from mctl.common import pki  # noqa: E402


def layer(name: str, size: int) -> bytes:
    return ib.layer_tar([ib.directory("data"), ib.file(f"data/{name}", os.urandom(size))])


def skopeo_copy(reg: Registry, ref: str, dest: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(["skopeo", "copy", "--quiet", "--src-authfile", reg.auth, "--src-cert-dir",
                    reg.cert_dir, f"docker://{ref}", f"oci:{dest}"], check=True,
                   capture_output=True)
    return time.perf_counter() - t0


def puller(reg: Registry, root: Path) -> Puller:
    return Puller(ImageImporter(ImageStore(str(root))),
                  RegistryConfig(auth_file=reg.auth, ca_files=(reg.ca_file,)))


def at_once(fns: list) -> float:
    """Wall time of running every fn in its own thread, all started together."""
    threads = [threading.Thread(target=f) for f in fns]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mib", type=int, default=30, help="size of the 3-layer image")
    args = ap.parse_args()
    print_header("image pull: the agent's pull vs skopeo copy to a local directory")
    with Cleanup() as stack:
        work = temp_dir(stack, "pull")
        reg = Registry(pki.make_ca("mctl-bench-ca"))
        stack.callback(reg.stop)
        third = (args.mib << 20) // 3
        base, middle = layer("a", third), layer("b", third)
        first = ib.ImageSpec(layers=[base, middle, layer("c", third)], name="app:1",
                             gzip_layers=[True] * 3)
        second = ib.ImageSpec(layers=[base, middle, layer("d", third)], name="app:2",
                              gzip_layers=[True] * 3)
        for tag, spec in (("one", first), ("two", second)):
            archive = ib.write_tar(ib.oci_layout([spec]), str(work / f"{tag}.tar"))
            reg.push(archive, f"bench/app:{tag}")
        ref = f"{reg.address}/bench/app:one"
        size = sum(len(ib.gz(t)) for t in first.layers) / (1 << 20)
        print(f"  image: 3 layers, {size:.1f} MiB compressed, registry {reg.address}")

        n = 0

        def fresh(what: str) -> Path:
            nonlocal n
            n += 1
            return work / f"{what}-{n}"

        one = Table("one node (seconds)", "s")
        one.add("skopeo copy to a directory",
                [skopeo_copy(reg, ref, str(fresh("copy"))) for _ in range(args.runs)])
        one.add("agent pull (copy + verify + unpack)",
                [puller(reg, fresh("store")).pull(ref).elapsed_ms / 1000
                 for _ in range(args.runs)])
        one.ratio("agent / skopeo", "agent pull (copy + verify + unpack)",
                  "skopeo copy to a directory")

        three = Table("three nodes at once (seconds, wall)", "s")
        three.add("3 x skopeo copy", [at_once([
            lambda d=fresh("copy"): skopeo_copy(reg, ref, str(d)) for _ in range(3)])
            for _ in range(args.runs)])
        three.add("3 x agent pull", [at_once([
            lambda p=puller(reg, fresh("store")): p.pull(ref) for _ in range(3)])
            for _ in range(args.runs)])
        three.ratio("agent / skopeo", "3 x agent pull", "3 x skopeo copy")

        shared = Table("second image sharing 2 of 3 layers", "MiB")
        fetched, alone = [], []
        for _ in range(args.runs):
            p = puller(reg, fresh("store"))
            p.pull(ref)
            again = p.pull(f"{reg.address}/bench/app:two")
            fetched.append(again.fetched_bytes / (1 << 20))
            assert again.layers_new == 1, again
            alone.append(puller(reg, fresh("store")).pull(
                f"{reg.address}/bench/app:two").fetched_bytes / (1 << 20))
        shared.add("fetched, first image on the node", fetched, "(1 layer new, unpacked)")
        shared.add("fetched, on an empty node", alone)
    check_leftovers(["mctl-bench-pull", "mctl-test-registry"])


if __name__ == "__main__":
    main()

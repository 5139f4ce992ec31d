"""What an image pull costs the agent, against `skopeo copy` of the same image.

    .venv/bin/python bench/pull.py [--runs 5] [--mib 30] [--compare-tree DIR]

Not a test. A registry (Debian's docker-registry, TLS from a CA of its own,
htpasswd auth: tests/registry.py) on loopback holds a 3-layer image of
about --mib MiB of random (incompressible) data, and a second image sharing
its two bottom layers. Timed, each on fresh stores:

- reference: `skopeo copy docker://... oci:DIR` to an empty directory, the
  network and digest checks only (what the agent's pull runs first);
- pull to 1 node: the agent's Puller.pull: skopeo copy and the import
  (every layer decompressed, checked against its diff id and unpacked),
  each in a process of its own, as an agent is (started and ready before
  the clock starts; the time is from "go" to its answer): with unpacking
  once skopeo is done ("after the fetch") and as the agent does it (each
  layer unpacked as skopeo writes its blob: agent/images/early.py), rounds
  interleaved with the skopeo reference; with --compare-tree DIR, the pull
  of another checkout (e.g. `git worktree add /tmp/base HEAD`) alternated
  with them, run the same way;
- pull to 3 nodes at once: three such processes (three agents) pulling
  together, against three concurrent `skopeo copy` (on one machine both
  share the CPUs and disk);
- the same image with zstd layers (skopeo recompresses it), when the
  `zstandard` package is installed;
- second pull sharing layers: bytes fetched, and layers unpacked, when the
  first image is on the node (aim: only the new layer);
- the import alone, of one layout skopeo fetched, into fresh stores, rounds
  interleaved: as it was (one layer after another, each compressed blob
  hashed again) and as it is (layers unpacked by threads at once, blob
  digests left to skopeo, which checked them as it fetched): the part of a
  pull that is the agent's own, without the registry's and skopeo's noise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import Cleanup, Table, check_leftovers, print_header, temp_dir, tree_layout

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import imagebuild as ib  # noqa: E402
from registry import Registry  # noqa: E402

from mctl.agent.images import archive as image_archive  # noqa: E402
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


def zstd_available() -> bool:
    try:
        import zstandard  # noqa: F401, PLC0415
    except ImportError:
        print("  (zstandard not installed: no zstd rows)")
        return False
    return True


def puller(reg: Registry, root: Path) -> Puller:
    return Puller(ImageImporter(ImageStore(str(root))),
                  RegistryConfig(auth_file=reg.auth, ca_files=(reg.ca_file,)))




def child(argv: list[str]) -> None:
    """One agent's pull, in this process: `--child STORE REF AUTH CA OVERLAP`.

    Says "ready" once the Puller is made, pulls on a line from stdin, says
    "done MS" (from that line to the pull's end, by its own clock).
    """
    store, ref, auth, ca, overlap = argv
    p = Puller(ImageImporter(ImageStore(store)), RegistryConfig(auth_file=auth, ca_files=(ca,)))
    p.overlap = overlap == "1"
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    p.pull(ref)
    print(f"done {(time.perf_counter() - t0) * 1000:.3f}", flush=True)


def pulls_in_processes(reg: Registry, ref: str, stores: list[Path], overlap: bool = True,
                       pythonpath: str = "") -> float:
    """Wall seconds of one pull per store, each by a process of its own, all started at once."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    procs = [subprocess.Popen([sys.executable, __file__, "--child", str(store), ref, reg.auth,
                               reg.ca_file, "1" if overlap else "0"], env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
             for store in stores]
    try:
        for pr in procs:
            assert pr.stdout is not None and pr.stdout.readline().strip() == "ready"
        t0 = time.perf_counter()
        for pr in procs:
            assert pr.stdin is not None
            pr.stdin.write("go\n")
            pr.stdin.flush()
        for pr in procs:
            assert pr.stdout is not None
            line = pr.stdout.readline()
            if not line.startswith("done"):
                raise RuntimeError(f"a pull in a child process failed: {line!r}")
        return time.perf_counter() - t0
    finally:
        for pr in procs:
            if pr.wait(timeout=60) != 0:
                raise RuntimeError("a pull in a child process failed")


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
    ap.add_argument("--compare-tree", type=Path, default=None, metavar="DIR",
                    help="also time the pulls of the checkout DIR, alternated with this one's")
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
        return
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
        zstd_ref = ""
        if zstd_available():
            # The same layers recompressed with zstd (as skopeo or buildah write them).
            subprocess.run(["skopeo", "copy", "--quiet", "--dest-authfile", reg.auth,
                            "--dest-cert-dir", reg.cert_dir, "--dest-compress",
                            "--dest-compress-format", "zstd",
                            f"oci-archive:{work / 'one.tar'}",
                            f"docker://{reg.address}/bench/app:zstd"],
                           check=True, capture_output=True)
            zstd_ref = f"{reg.address}/bench/app:zstd"
        size = sum(len(ib.gz(t)) for t in first.layers) / (1 << 20)
        print(f"  image: 3 layers, {size:.1f} MiB compressed, registry {reg.address}")

        n = 0

        def fresh(what: str) -> Path:
            nonlocal n
            n += 1
            return work / f"{what}-{n}"

        def pull_s(overlap: bool, image: str = ref) -> float:
            p = puller(reg, fresh("store"))
            p.overlap = overlap
            return p.pull(image).elapsed_ms / 1000

        def stores(k: int) -> list[Path]:
            return [fresh("store") for _ in range(k)]

        compare = ""
        if args.compare_tree is not None:
            compare = str(tree_layout(Path(tempfile.mkdtemp(prefix="tree-", dir=work)),
                                      args.compare_tree.resolve()))
        rows = {"skopeo copy to a directory": "copy",
                "pull: unpacking after the fetch": "after",
                "pull: unpacking as blobs land (now)": "now"}
        if compare:
            rows[f"pull of {args.compare_tree}"] = "compare"
        # Rounds interleaved (skopeo, after, now, compare, ...) so that the
        # load of the machine, which moves, falls on all alike.
        for title, nodes in (("one node (seconds)", 1),
                             ("three nodes at once (seconds, wall)", 3)):
            times: dict[str, list[float]] = {kind: [] for kind in rows.values()}
            for _ in range(args.runs):
                times["copy"].append(at_once([lambda d=fresh("copy"): skopeo_copy(reg, ref, str(d))
                                              for _ in range(nodes)]))
                times["after"].append(pulls_in_processes(reg, ref, stores(nodes), overlap=False))
                times["now"].append(pulls_in_processes(reg, ref, stores(nodes)))
                if compare:
                    times["compare"].append(pulls_in_processes(reg, ref, stores(nodes),
                                                               pythonpath=compare))
            t = Table(title, "s")
            for label, kind in rows.items():
                t.add(label, times[kind])
            copy_label = "skopeo copy to a directory"
            for label, kind in rows.items():
                if kind != "copy":
                    t.ratio(f"{kind} / skopeo", label, copy_label)
            if compare:
                t.ratio("now / compare", "pull: unpacking as blobs land (now)",
                        f"pull of {args.compare_tree}")
            t.note("minimums: " + ", ".join(
                f"{kind} / skopeo {min(times[kind]) / min(times['copy']):.2f}x"
                for kind in rows.values() if kind != "copy"))

        if zstd_ref:
            z = Table("the same image with zstd layers, one node (seconds)", "s")
            gzip_s, zstd_s = [], []
            for _ in range(args.runs):
                gzip_s.append(pull_s(overlap=True))
                zstd_s.append(pull_s(overlap=True, image=zstd_ref))
            z.add("pull, gzip layers", gzip_s)
            z.add("pull, zstd layers", zstd_s)
            z.ratio("zstd / gzip", "pull, zstd layers", "pull, gzip layers")

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

        layout = fresh("layout")
        skopeo_copy(reg, ref, str(layout))
        threads = image_archive.MAX_UNPACK_THREADS
        before, after = [], []
        for _ in range(args.runs):
            for blobs_verified, out in ((False, before), (True, after)):
                # "before": one layer at a time (the thread cap at 1).
                image_archive.MAX_UNPACK_THREADS = threads if blobs_verified else 1
                t0 = time.perf_counter()
                image_archive.import_archive(ImageStore(str(fresh("import"))), str(layout),
                                       name=ref, pinned=True, blobs_verified=blobs_verified)
                out.append(time.perf_counter() - t0)
        image_archive.MAX_UNPACK_THREADS = threads
        imp = Table("import of the fetched layout (seconds)", "s")
        imp.add("one layer at a time, blobs hashed again", before)
        imp.add("layers at once, blob digests from skopeo", after)
        imp.ratio("now / before", "layers at once, blob digests from skopeo",
                  "one layer at a time, blobs hashed again")
    check_leftovers(["mctl-bench-pull", "mctl-test-registry"])


if __name__ == "__main__":
    main()

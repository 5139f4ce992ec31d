"""mctl-rekey: re-seal every stored Secret under the first key of a key file (a rotation).

    python -m mctl.scheduler.rekey --etcd HOST:PORT [--etcd-ca ... --etcd-cert ... \\
        --etcd-key ...] --encryption-key-file FILE

The procedure (docs/secrets.md): put a new key on the first line of the
key file, keep the old one below it, restart the schedulers (they seal with
the new key and still open the old values), run this, then drop the old
line and restart them again. Each Secret is opened with whichever key
sealed it and sealed again with the first, keeping its data version (so no
workload rolls); each write is a compare-and-swap, so a Secret changed
meanwhile by an apply is left as that apply sealed it (with the new key).
A value that no key of the file opens is named and left alone, and the
command exits 1.
"""

from __future__ import annotations

import argparse
import os
import sys

from .secretbox import SecretBox, SecretBoxError, key_id_of, load_key_file
from .store import Conflict, Store, Write


def reseal(store: Store, box: SecretBox) -> tuple[int, list[str]]:
    """(Secrets re-sealed, problems); those already under the first key are left."""
    snap = store.snapshot()
    done, problems = 0, []
    for (ns, name), sealed in sorted(snap.secrets.items()):
        if key_id_of(sealed) == box.sealing_id:
            continue
        try:
            opened = box.open(sealed, ns, name)
        except SecretBoxError as e:
            problems.append(str(e))
            continue
        key = store.keys.secret(ns, name)
        try:
            store.commit([Write(key, box.seal(opened.secret, opened.version),
                                snap.mod_revisions[key])])
        except Conflict:
            continue     # changed meanwhile: the apply that did it sealed with the new key
        done += 1
    return done, problems


def main(argv: list[str] | None = None) -> None:
    from .main import etcd_credentials
    p = argparse.ArgumentParser(prog="mctl-rekey", description=__doc__.splitlines()[0])
    p.add_argument("--etcd", default=os.environ.get("MCTL_ETCD", "127.0.0.1:2379"))
    p.add_argument("--etcd-ca", default=os.environ.get("MCTL_ETCD_CA", ""))
    p.add_argument("--etcd-cert", default=os.environ.get("MCTL_ETCD_CERT", ""))
    p.add_argument("--etcd-key", default=os.environ.get("MCTL_ETCD_KEY", ""))
    p.add_argument("--prefix", default="/mctl/")
    p.add_argument("--encryption-key-file", required=True, metavar="FILE")
    args = p.parse_args(argv)
    try:
        box = load_key_file(args.encryption_key_file)
        tls = etcd_credentials(args.etcd_ca, args.etcd_cert, args.etcd_key)
    except (SecretBoxError, ValueError) as e:
        print(f"mctl-rekey: {e}", file=sys.stderr)
        sys.exit(2)
    store = Store(args.etcd, prefix=args.prefix, tls=tls)
    try:
        done, problems = reseal(store, box)
    finally:
        store.close()
    print(f"{done} secrets re-sealed with key {box.sealing_id.hex()}")
    for problem in problems:
        print(f"mctl-rekey: {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()

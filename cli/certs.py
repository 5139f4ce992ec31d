"""`mctl certs init|issue|show`: the cluster CA and certificates for real machines.

    mctl certs init  --dir /etc/mctl/pki                      # ca.crt, ca.key
    mctl certs issue --dir /etc/mctl/pki --role scheduler --san 10.0.0.1
    mctl certs issue --dir /etc/mctl/pki --role agent --name node1 --san 10.0.0.11
    mctl certs issue --dir /etc/mctl/pki --role admin --name alice
    mctl certs show  /etc/mctl/pki/node1.crt --ca /etc/mctl/pki/ca.crt

Each certificate lands in the same dir as NAME.crt and NAME.key (0600); copy
ca.crt with it to the machine that uses it, never ca.key. `mctl cluster up`
does all of this by itself for a local cluster. See common/pki.py for what a
role means and which names are verified.
"""

from __future__ import annotations

import argparse
import os

from cryptography import x509

from mctl.common import pki

from .client import CliError


def cmd_certs(args: argparse.Namespace) -> int:
    try:
        if args.action == "init":
            pki.init_ca_dir(args.dir, force=args.force, days=args.days or pki.CA_DAYS)
            cert, key = pki.ca_paths(args.dir)
            print(f"CA written: {cert} (give to every machine), {key} (keep secret)")
        elif args.action == "issue":
            if not args.role:
                raise pki.PKIError("certs issue needs --role scheduler|agent|admin")
            cert, key = pki.issue_to_dir(args.dir, args.role, args.name or "", args.san,
                                         days=args.days or pki.LEAF_DAYS, force=args.force)
            print(f"{args.role} certificate written: {cert}, {key}")
        else:
            return show(args.files, args.ca)
    except pki.PKIError as e:
        raise CliError(str(e)) from None
    return 0


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def show(files: list[str], ca_path: str) -> int:
    if not files:
        raise pki.PKIError("certs show needs one or more certificate files")
    ca = pki.read_file(ca_path, "the CA certificate") if ca_path else None
    bad = []
    for path in files:
        pem = pki.read_file(path, "the certificate")
        cert = pki.load_cert(pem, path)
        who = "certificate authority" if _is_ca(cert) else pki.identity_of(cert)
        print(f"{path}: {who or 'no mctl role'}")
        print(f"  subject  {cert.subject.rfc4514_string()}")
        print(f"  issuer   {cert.issuer.rfc4514_string()}")
        print(f"  names    {', '.join(pki.sans_of(cert)) or '-'}")
        print(f"  valid    {cert.not_valid_before_utc:%Y-%m-%d %H:%M}Z to "
              f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z")
        if ca is not None and _is_ca(cert):
            same = pem.strip() == ca.strip()
            print(f"  {'is' if same else 'NOT'} the CA in {ca_path}")
            if not same:
                bad.append(os.path.basename(path))
        elif ca is not None:
            try:
                pki.verify(pem, ca)
                print(f"  verified against {ca_path}")
            except pki.PKIError as e:
                print(f"  NOT VALID: {e}")
                bad.append(os.path.basename(path))
    if bad:
        raise pki.PKIError(f"{', '.join(bad)} not valid for the CA in {ca_path}")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    c = sub.add_parser("certs", help="make the cluster CA and certificates: init, issue, show")
    c.add_argument("action", choices=["init", "issue", "show"])
    c.add_argument("files", nargs="*", help="show: certificate files")
    c.add_argument("--dir", default=".", help="where ca.crt/ca.key and the certificates are")
    c.add_argument("--role", choices=list(pki.ROLES), help="issue: the certificate's role")
    c.add_argument("--name", default="",
                   help="issue: node name (agent), user (admin) or scheduler name")
    c.add_argument("--san", action="append", default=[],
                   help="issue: an extra IP address or DNS name (repeatable)")
    c.add_argument("--days", type=int, default=0,
                   help=f"validity (default {pki.CA_DAYS} for the CA, {pki.LEAF_DAYS} otherwise)")
    c.add_argument("--force", action="store_true", help="replace existing files")
    c.add_argument("--ca", default="", help="show: verify against this CA certificate")
    c.set_defaults(fn=cmd_certs)

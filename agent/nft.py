"""Running nft scripts: the one way the agent changes nftables (hostports, firewall)."""

from __future__ import annotations

import shutil
import subprocess


class NftError(Exception):
    """nft is missing or refused a script; the message says which."""


def binary() -> str | None:
    return shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")


def run(script: str, needed_for: str) -> None:
    """Applies `script` atomically (nft -f -)."""
    nft = binary()
    if nft is None:
        raise NftError(f"{needed_for} needs the nft command (Debian package nftables)")
    proc = subprocess.run([nft, "-f", "-"], input=script, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise NftError(f"nft: {proc.stderr.strip() or f'exit status {proc.returncode}'}")

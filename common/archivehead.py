"""What the first bytes of an image archive say it is, before it is sent or stored.

`mctl image import` takes a `docker save` tar or an OCI layout's tar, maybe
compressed (gzip, bzip2, xz: what agent/images/source.py opens). Anything
else, /dev/zero or a text file given by mistake, would be streamed in full
before the node's unpacking found out, up to gigabytes; its first block
tells at once. A tar begins with a 512-byte header whose checksum must
match (tar(5)); each compressed format with its magic number.

Both sides use it: the CLI to refuse before sending, the agent as the gate.
"""

from __future__ import annotations

# Enough for a tar header (tarfile.BLOCKSIZE), and for every magic number
# below. tarfile itself is imported where a header is parsed: the agent
# imports this module at start, and reads an archive only when one comes.
HEAD_BYTES = 512

_MAGICS = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
}


def problem(head: bytes) -> str | None:
    """Why an archive starting with `head` (its first HEAD_BYTES, or all of it) is none."""
    for magic in _MAGICS:
        if head.startswith(magic):
            return None
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd-compressed archives are not supported (use gzip, bzip2 or xz)"
    if len(head) < HEAD_BYTES:
        return f"only {len(head)} bytes: too short for a tar archive"
    if head[:HEAD_BYTES].count(0) == HEAD_BYTES:
        # tar's end-of-archive block, or /dev/zero.
        return "starts with an empty block: not a tar archive (or an empty one)"
    import tarfile

    try:
        tarfile.TarInfo.frombuf(head[:HEAD_BYTES], "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return "not a tar archive (compressed with gzip, bzip2 or xz, or not)"
    return None

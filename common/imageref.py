"""Image references: what `NAME[:TAG]` may look like, as Docker's reference grammar has it.

A name is an optional registry host (with an optional port) and "/", then
one or more path components of lowercase letters and digits joined by ".",
"_", "__" or dashes; a tag is up to 128 of letters, digits, "_", "." and
"-", not starting with "." or "-". A name without a tag means `:latest`, so
`busybox` and `busybox:latest` are one image. Digest references
(`name@sha256:...`) name content, not an image to create, so they are not
accepted where an image is being named.

Shared by the CLI (to refuse a bad `--name` before uploading anything) and
the agent (which must not trust what it is sent).
"""

from __future__ import annotations

import re

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST_PART = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"{_HOST_PART}(?:\.{_HOST_PART})*(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
# \A and \Z rather than ^ and $: "$" would also accept a trailing newline.
_REFERENCE = re.compile(rf"\A(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::{_TAG})?\Z")
NAME_MAX = 255


def normalize(ref: str) -> str:
    """`busybox` -> `busybox:latest`; a reference with a tag stays as it is."""
    return ref if ":" in ref.rsplit("/", 1)[-1] else f"{ref}:latest"


def problem(ref: str) -> str | None:
    """What is wrong with `ref` as NAME[:TAG], in a few lowercase words, or None."""
    if not ref:
        return "an image name must not be empty"
    if "@" in ref:
        return f"{ref!r} is a digest reference; give NAME[:TAG]"
    name = ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
    if len(name) > NAME_MAX:
        return f"image name {name[:40]!r}... is longer than {NAME_MAX} characters"
    if not _REFERENCE.match(ref):
        return (f"{ref!r} is not an image reference (lowercase NAME[:TAG], "
                "e.g. registry.local:5000/team/app:1.2)")
    return None

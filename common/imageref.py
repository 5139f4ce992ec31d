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

A workload's image may also be pinned: `NAME[:TAG]@sha256:<64 hex>` names
the bytes to run (`reference_problem`). A name whose first component is a
host (it has a "." or a ":", or is `localhost`, as Docker decides) comes
from that registry (`registry_of`); other names must be on the node already
(busybox, or imported): there is no default registry to fall back to.
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
_DIGEST = re.compile(r"\Asha256:[0-9a-f]{64}\Z")


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


def reference_problem(ref: str) -> str | None:
    """What is wrong with `ref` as NAME[:TAG][@sha256:DIGEST] (a workload's image), or None."""
    name, at, digest = ref.partition("@")
    if at and not _DIGEST.match(digest):
        shown = ref if len(ref) <= 120 else ref[:100] + "..."
        return f"{shown!r}: the digest after @ must be sha256: and 64 lowercase hex digits"
    return problem(name)


def registry_of(ref: str) -> str | None:
    """The registry host[:port] that `ref` comes from, or None for a node-local name."""
    first, slash, _ = ref.partition("@")[0].partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def digest_of(ref: str) -> str:
    """The `sha256:...` a reference is pinned to, or ""."""
    return ref.partition("@")[2]


def normalize_reference(ref: str) -> str:
    """As `normalize`, for references that may carry a digest: a pinned one stays as it is."""
    return ref if "@" in ref else normalize(ref)


def pinned(image: str, digest: str) -> str:
    """What a replica runs: `image` pinned to the digest its tag was resolved to, if any."""
    if not digest or "@" in image:
        return image
    return f"{image}@{digest}"


def fetch_reference(ref: str) -> str:
    """What to ask a registry for: a pinned `name:tag@digest` without its tag.

    The digest alone names the bytes, and registry clients (skopeo 1.9 among
    them) refuse a reference with both.
    """
    name, at, digest = ref.partition("@")
    if not at:
        return ref
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    return f"{name}@{digest}"

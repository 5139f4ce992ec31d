"""Parsing an IPv4 network from a flag or a record, with one wording for its errors."""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Network


def parse_ipv4_network(text: str, what: str) -> IPv4Network:
    """`text` as an IPv4 network (host bits must be 0); ValueError says `what` was wrong."""
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        raise ValueError(f"{what} {text!r}: {e}") from None
    if not isinstance(net, IPv4Network):
        raise ValueError(f"{what} {text!r}: only IPv4 is supported")
    return net

"""The node guard's nftables text (firewall.py); tests/kernel/test_escape.py runs it."""

from __future__ import annotations

from ipaddress import IPv4Network

from mctl.agent import firewall


def test_ruleset_replaces_one_inet_table_per_bridge():
    text = firewall.ruleset("mctl0", IPv4Network("10.244.0.0/16"))
    lines = [line.strip() for line in text.splitlines()]
    # Replaced in one transaction, whether or not it existed.
    assert lines[:3] == ["add table inet mctl0_guard", "delete table inet mctl0_guard",
                         "table inet mctl0_guard {"]
    rules = lines[lines.index("type filter hook input priority filter; policy accept;") + 1:]
    assert rules[:6] == [
        "ct state established,related accept",       # replies to the node's own connections
        'iifname "mctl0" meta l4proto { icmp, ipv6-icmp } accept',
        # DNS to the bridge's own address: the node's responder (dns.py)
        'iifname "mctl0" fib daddr . iif type local meta l4proto { tcp, udp } th dport 53 accept',
        'iifname "mctl0" counter drop',              # this node's containers, any source
        "ip saddr 10.244.0.0/16 meta l4proto icmp accept",
        "ip saddr 10.244.0.0/16 counter drop",       # other nodes' containers
    ]


def test_table_name_follows_the_bridge():
    assert firewall.table_name("mctl0") == "mctl0_guard"
    assert firewall.table_name("mctlbr7") == "mctlbr7_guard"

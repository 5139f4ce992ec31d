"""A container's /etc/hosts with its workload's replicas (agent/hosts.py) and hostPort rules."""

from __future__ import annotations

import os

from mctl.agent import hostports, hosts


def test_render_without_network():
    text = hosts.render("web-1", "")
    assert text.splitlines() == ["127.0.0.1\tlocalhost",
                                 "::1\tlocalhost ip6-localhost ip6-loopback",
                                 "127.0.1.1\tweb-1"]


def test_render_lists_peers_sorted_without_self_or_missing_addresses():
    text = hosts.render("web-1", "10.244.1.2",
                        [("web-2", "10.244.2.2"), ("web-1", "10.244.1.2"), ("web-3", ""),
                         ("web-0", "10.244.3.2"), ("web-2", "10.244.2.2")], replica="web-1")
    lines = text.splitlines()
    assert lines[2] == "10.244.1.2\tweb-1"
    assert lines[3].startswith("# Managed by mctl")
    assert lines[4:] == ["10.244.3.2\tweb-0", "10.244.2.2\tweb-2"]


def test_render_with_a_custom_hostname_still_skips_own_replica():
    text = hosts.render("web", "10.0.0.2", [("web-a", "10.0.0.2"), ("web-b", "10.0.0.3")],
                        replica="web-a")
    assert "10.0.0.2\tweb\n" in text and "web-a" not in text and "10.0.0.3\tweb-b" in text


def test_rewrite_in_place_keeps_the_inode(tmp_path):
    path = str(tmp_path / "hosts")
    hosts.write_new(path, "a long first version of the file\n")
    inode = os.stat(path).st_ino
    assert hosts.rewrite_in_place(path, "short\n")
    assert open(path).read() == "short\n"
    assert os.stat(path).st_ino == inode
    assert not hosts.rewrite_in_place(path, "short\n")


def test_ruleset_replaces_the_whole_table():
    text = hostports.ruleset("mctl0", [hostports.Mapping("udp", 53, "10.0.0.3", 5353),
                                       hostports.Mapping("tcp", 80, "10.0.0.2", 8080)])
    lines = text.splitlines()
    assert lines[:3] == ["add table ip mctl0", "delete table ip mctl0", "table ip mctl0 {"]
    assert "elements = { tcp . 80 : 10.0.0.2 . 8080, udp . 53 : 10.0.0.3 . 5353 }" in text
    assert "fib daddr type local dnat ip to meta l4proto . th dport map @hostports" in text
    assert "elements" not in hostports.ruleset("mctl0", [])


def test_mapping_round_trips():
    m = hostports.Mapping("tcp", 18080, "10.0.0.2", 8080)
    assert hostports.Mapping.from_list(m.to_list()) == m

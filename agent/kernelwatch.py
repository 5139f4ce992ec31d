"""Kernel notifications that may mean drift in what the agent owns: wake the self-check at once.

The periodic check (selfcheck.py) finds any drift within a resync; these
notifications make the repair of the usual accidents prompt: a link going
down or up (a blip: IPv4 deletes the routes through a link that goes down
without notifying each route), a link, address or route deleted, and any
nftables transaction (someone flushed a table). A notification is only a
hint to look, so one thread just classifies them and calls `on_change`
with the kind of check due ("links" or "nft"); the checks themselves run
on the node loop. New addresses and routes are not hints: they are what
the repairs themselves make.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
from collections.abc import Callable

from mctl.common import netns
from mctl.common.rtnetlink import RTM_DELADDR, RTM_DELLINK, RTM_DELROUTE, RTM_NEWLINK, RtMonitor

from .nft import NETLINK_NETFILTER, NftMonitor

log = logging.getLogger(__name__)

HINTS = {RTM_NEWLINK, RTM_DELLINK, RTM_DELADDR, RTM_DELROUTE}


class KernelWatch:
    """One thread reading link/address/route and nftables notifications of a namespace."""

    def __init__(self, on_change: Callable[[str, str], None],
                 node_netns: str | None = None) -> None:
        self.on_change = on_change
        self.node_netns = node_netns
        self._thread: threading.Thread | None = None
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self.rt: RtMonitor | None = None
        self.nft: NftMonitor | None = None

    def start(self) -> None:
        ns = self.node_netns
        try:
            self.rt = RtMonitor(sock=netns.netlink_socket(ns) if ns else None)
        except OSError as e:
            log.warning("no link/route notifications (drift is found by the periodic check "
                        "only): %s", e)
        try:
            def open_nf() -> socket.socket:
                return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            self.nft = NftMonitor(netns.run_in(ns, open_nf) if ns else None)
        except OSError as e:
            log.warning("no nftables notifications (drift is found by the periodic check "
                        "only): %s", e)
        if self.rt is None and self.nft is None:
            return
        self._thread = threading.Thread(target=self._run, name="kernel-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        for m in (self.rt, self.nft):
            if m is not None:
                m.close()
        os.close(self._stop_r)
        os.close(self._stop_w)

    def _run(self) -> None:
        sources: list[RtMonitor | NftMonitor | int] = [self._stop_r]
        sources += [m for m in (self.rt, self.nft) if m is not None]
        while True:
            ready, _, _ = select.select(sources, [], [])
            if self._stop_r in ready:
                return
            try:
                if self.rt is not None and self.rt in ready:
                    self._links(self.rt)
                if self.nft is not None and self.nft in ready:
                    count = self.nft.read()
                    if count is None or count:
                        self.on_change("nft", "nftables changed")
            except Exception:  # noqa: BLE001 - the periodic check still runs
                log.exception("reading kernel notifications failed")

    def _links(self, rt: RtMonitor) -> None:
        changes = rt.changes(HINTS)
        if changes is None:
            self.on_change("links", "notifications lost (overrun)")
            return
        # Only the first hint of the batch is parsed (see below).
        for c in changes:
            if c.link is not None:
                name = c.link.name or f"#{c.link.ifindex}"
                state = "deleted" if c.kind == RTM_DELLINK else ("up" if c.link.up else "down")
                why = f"link {name} {state}"
            elif c.address is not None:
                why = f"address {c.address.address}/{c.address.prefixlen} deleted"
            elif c.route is not None:
                why = f"route {c.route.destination} deleted"
            else:
                continue
            # One call per batch: the check sees every change of it at once.
            self.on_change("links", why)
            return

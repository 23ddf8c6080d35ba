"""TCP keepalives the kernel sends, for connections that stay up while quiet.

A node's reverse tunnel and its access feed can go minutes without a byte. Middleboxes
forget idle flows (AWS's NLB and NAT gateway after 350 s, Azure's load balancer after
4 minutes), and a peer that vanished without a FIN would otherwise be noticed only at
the next application-level ping. The kernel's probes keep such a flow known to every
middlebox on the way and notice a dead peer in about two minutes (IDLE_SECONDS plus
PROBES probes PROBE_SECONDS apart), for no work in this process: the SSH keepalives and
feed pings above them can be minutes apart, and with thousands of tunnels their
interval is most of an idle proxy's CPU.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

IDLE_SECONDS = 60
PROBE_SECONDS = 15
PROBES = 4


def socket_options() -> list[tuple[int, int, int]]:
    """The options as (level, option, value), for httpx's ``socket_options``."""
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", IDLE_SECONDS), ("TCP_KEEPINTVL", PROBE_SECONDS),
                        ("TCP_KEEPCNT", PROBES)):
        option = getattr(socket, name, None)  # Linux names; other systems keep defaults
        if option is not None:
            options.append((socket.IPPROTO_TCP, option, value))
    return options


def keep_alive(sock: Any) -> None:
    """Turn the probes on for a connected socket (a transport's ``socket`` extra); a
    transport without one (a pipe in tests) is left as it is."""
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        for level, option, value in socket_options():
            sock.setsockopt(level, option, value)

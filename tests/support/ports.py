"""Free TCP ports, for servers a test starts as processes of their own (which must be
told their address before they bind it)."""

from __future__ import annotations

import contextlib
import socket


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports on ``host``, free right now.

    The probe sockets stay bound until every port is chosen: closed one by one, the
    kernel may hand the same port out twice (it did, and slapd was given one port for
    both its listeners)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket(family)) for _ in range(count)]
        for probe in probes:
            probe.bind((host, 0))
        return [int(probe.getsockname()[1]) for probe in probes]


def free_port(host: str = "127.0.0.1") -> int:
    """One port on ``host``, free right now."""
    return free_ports(1, host)[0]

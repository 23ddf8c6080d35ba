"""Remote port forwarding (``ssh -R``): the node listens, and every connection it accepts
goes back to the user in a ``forwarded-tcpip`` channel, copied by our own loops.

Like sshd with ``GatewayPorts no``, the node listens on its loopback whatever address the
client asked for: a forward is reachable from the node itself, never from the network
around it. Ports below 1024 are for the root login only, as with sshd. Bytes a local
client sends before the channel is open wait in its socket's reader (nothing is dropped,
unlike asyncssh's stock forwarder, which can lose the first bytes).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable

import asyncssh

PRIVILEGED_BELOW = 1024

Accepted = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def bind_host(requested: str) -> str:
    """The loopback address to listen on: IPv6's when the client asked for an IPv6 one."""
    try:
        if ipaddress.ip_address(requested.strip("[]")).version == 6:
            return "::1"
    except ValueError:
        pass
    return "127.0.0.1"


def refusal_for_port(login: str, port: int) -> str | None:
    """Why the node will not listen on ``port`` for ``login`` (None: it may)."""
    if 0 < port < PRIVILEGED_BELOW and login != "root":
        return f"port {port} is privileged: only the root login may listen below 1024"
    return None


class RemoteForwardListener(asyncssh.SSHListener):
    """A listening socket on the node, owned by one SSH connection (asyncssh closes it
    when the client cancels the forward or the connection ends)."""

    def __init__(self, server: asyncio.AbstractServer, host: str) -> None:
        super().__init__()
        self._server = server
        self.host = host

    @classmethod
    async def open(cls, host: str, port: int, accepted: Accepted) -> RemoteForwardListener:
        server = await asyncio.start_server(accepted, host, port)
        return cls(server, host)

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.get_port()}"

    def get_port(self) -> int:
        return int(self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        self._server.close()

    async def wait_closed(self) -> None:
        await self._server.wait_closed()

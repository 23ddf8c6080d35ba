"""The node's end of its data connections (the wire: limen.tunnel.data_link).

The proxy asks inside the tunnel; the node dials its own tunnel target (the address it
found through the proxy's ping: the proxy names none in the ask, so it cannot send the
node anywhere), opens with the ticket, answers ``ok``, and serves its SSH service on the
connection as on any accepted one. A dial that fails is answered ``no`` at once, and
the proxy goes back to channels inside the tunnel.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh

from limen.tcpkeepalive import keep_alive
from limen.tunnel.data_link import ANSWER_LIMIT, ANSWER_OK, preamble, ticket_of_line
from limen.tunnel.discovery import TunnelTarget

log = logging.getLogger(__name__)

DIAL_SECONDS = 2.0  # under the proxy's wait (data_gate.DIAL_TIMEOUT), to answer in time
ASK_SECONDS = 5.0  # for the ask's line to arrive

ServeSocket = Callable[[socket.socket], Awaitable[Any]]


class DataDialer:
    """Answers one tunnel's asks; ``handler`` is for SSHClientConnection.start_server."""

    def __init__(self, target: TunnelTarget, serve_socket: ServeSocket) -> None:
        self.target = target
        self._serve_socket = serve_socket
        self._serving: set[asyncio.Task[None]] = set()
        self.dialed = 0

    def handler(self, _orig_host: str, _orig_port: int) -> Callable[..., Awaitable[None]]:
        return self.answer

    async def answer(self, reader: asyncssh.SSHReader[bytes],
                     writer: asyncssh.SSHWriter[bytes]) -> None:
        try:
            sock = await self._dial(await _ask_line(reader))
        except _Refused as exc:
            writer.write(f"no: {exc}\n".encode())
            writer.close()
            return
        writer.write(ANSWER_OK)
        writer.close()
        self.dialed += 1
        task = asyncio.get_running_loop().create_task(self._serve(sock))
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    async def _dial(self, line: bytes) -> socket.socket:
        ticket = ticket_of_line(line)
        if ticket is None:
            raise _Refused("the ask held no ticket")
        loop = asyncio.get_running_loop()
        sock: socket.socket | None = None
        try:
            async with asyncio.timeout(DIAL_SECONDS):
                infos = await loop.getaddrinfo(self.target.host, self.target.port,
                                               type=socket.SOCK_STREAM)
                family, kind, proto, _name, addr = infos[0]
                sock = socket.socket(family, kind, proto)
                sock.setblocking(False)
                await loop.sock_connect(sock, addr)
                await loop.sock_sendall(sock, preamble(ticket))
        except (OSError, TimeoutError) as exc:
            if sock is not None:
                sock.close()
            reason = "no answer in time" if isinstance(exc, TimeoutError) else str(exc)
            log.warning("could not dial the proxy at %s for a data connection: %s",
                        self.target, reason)
            raise _Refused(f"cannot reach {self.target}: {reason}") from None
        keep_alive(sock)
        return sock

    async def _serve(self, sock: socket.socket) -> None:
        try:
            await self._serve_socket(sock)
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            log.info("a data connection ended before login: %s", exc)
            sock.close()


class _Refused(Exception):
    pass


async def _ask_line(reader: asyncssh.SSHReader[bytes]) -> bytes:
    """The ask's one line (bounded, and within ASK_SECONDS)."""
    data = b""
    try:
        async with asyncio.timeout(ASK_SECONDS):
            while b"\n" not in data and len(data) < ANSWER_LIMIT:
                chunk = await reader.read(ANSWER_LIMIT - len(data))
                if not chunk:
                    break
                data += chunk
    except (TimeoutError, asyncssh.Error) as exc:
        raise _Refused("the ask did not arrive") from exc
    return data

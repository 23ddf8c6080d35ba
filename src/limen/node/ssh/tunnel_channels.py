"""The channels a reverse tunnel's proxy opens to this node, as asyncssh.listen()'s
``tunnel``: wide (a large window and packet size) and gathering.

Each channel carries one SSH connection of the node's own, a user's. asyncssh writes
that connection's packets to its transport one by one, each in parts, 32 KiB at most
(the user's client sets that size), and a channel sends each write as a packet of its
own: a 16 MiB download crossed the tunnel as 2,068 packets. Every packet
that crosses the tunnel costs both ends the tunnel's own per-packet work: framing, a
cipher call, a TLS record, the proxy's parsing. Output was the slow direction through a
tunnel: the node's process, which encrypts twice, ran at a full core (py-spy: most of it
in asyncssh's per-packet send path). So the writes made in one turn of the event loop
are gathered and go out as one write at its end, or at once past GATHER_LIMIT: the
same download crosses as 262 packets, and downloads from a tunneled node went from
0.50-0.59x a direct node's throughput to 0.69-0.82x (bench/tunnel.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncssh

# The channels' window, and the largest packet the proxy may send (asyncssh's default:
# 32 KiB). The proxy forwards a user's SSH stream in chunks of up to a few hundred KiB;
# each packet costs both ends the same Python work whatever its size, so fewer, larger
# ones cost less.
TUNNEL_CHANNEL_WINDOW = 8 * 1024 * 1024
TUNNEL_CHANNEL_MAX_PACKET = 128 * 1024
# What gathers before a write goes out without waiting for the end of the turn: the
# proxy takes packets of up to 256 KiB from agents (tunnel.registry.CHANNEL_MAX_PACKET).
GATHER_LIMIT = 256 * 1024


class WideChannels:
    """A reverse tunnel as asyncssh.listen()'s ``tunnel``: the same listener that
    ``SSHClientConnection.listen_ssh`` makes, with a larger window and packet size, and
    each connection's writes gathered."""

    def __init__(self, conn: asyncssh.SSHClientConnection) -> None:
        self._conn = conn

    async def create_server(self, session_factory: Any, host: str, port: int) -> Any:
        def gathering(orig_host: str, orig_port: int) -> _GatheringSession:
            return _GatheringSession(session_factory(orig_host, orig_port))

        return await self._conn.create_server(
            gathering, host, port, window=TUNNEL_CHANNEL_WINDOW,
            max_pktsize=TUNNEL_CHANNEL_MAX_PACKET)


class _GatheringSession:
    """The channel's session: the node's SSH connection, given the channel wrapped."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self._conn.connection_made(GatheringChannel(chan))

    def __getattr__(self, name: str) -> Any:  # every other callback: the connection's
        return getattr(self._conn, name)


class GatheringChannel:
    """A channel as an SSH connection's transport, its writes gathered per loop turn.

    Order holds: what is gathered goes out before anything later, and before close;
    asyncssh schedules its abort with call_soon after its last write, so the flush
    that write scheduled runs first."""

    def __init__(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self._chan = chan
        self._pending: list[bytes] = []
        self._size = 0
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)
        self._size += len(data)
        if self._size >= GATHER_LIMIT:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        self._size = 0
        # A channel closed meanwhile: the connection hears of it through connection_lost.
        with contextlib.suppress(BrokenPipeError, OSError):
            self._chan.write(data)

    def get_write_buffer_size(self) -> int:
        return self._chan.get_write_buffer_size() + self._size

    def close(self) -> None:
        self.flush()
        self._chan.close()

    def abort(self) -> None:
        self._pending.clear()
        self._size = 0
        self._chan.abort()

    def __getattr__(self, name: str) -> Any:  # get_extra_info, pausing, write_eof...
        return getattr(self._chan, name)

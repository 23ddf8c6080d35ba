"""Local port forwarding (``ssh -L``: direct-tcpip channels) with our own copy loops.

The target is connected before the channel is confirmed, so a refused connection is
an open failure the client understands. Bytes the target sends first (a banner) wait
in the socket's reader until the channel is open: nothing is dropped, unlike the stock
forwarder, which was seen to drop a target's first bytes before the channel side was
connected. Both directions honour flow control.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import asyncssh

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
HIGH_WATER = 256 * 1024  # bytes queued towards the target before the channel is paused
CONNECT_TIMEOUT = 10.0


async def resolve_target(host: str, port: int) -> list[str]:
    """The addresses a forward's host name stands for, in the resolver's order."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM), CONNECT_TIMEOUT
        )
    except (OSError, TimeoutError, UnicodeError) as exc:
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_CONNECT_FAILED, f"cannot resolve {host}: "
            f"{getattr(exc, 'strerror', None) or 'timed out'}"
        ) from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def connect_target(address: str, port: int, shown: str | None = None,
                         ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the forward's (already judged) address, as an open failure the client
    will show; ``shown`` is the name the client asked for."""
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):  # (not wait_for: see ssh_routes)
            return await asyncio.open_connection(address, port)
    except (OSError, TimeoutError) as exc:
        reason = getattr(exc, "strerror", None) or "timed out"
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_CONNECT_FAILED, f"cannot connect to {shown or address}:{port}: {reason}"
        ) from exc


class ForwardedConnection(asyncssh.SSHTCPSession[bytes]):
    """Copies bytes between a direct-tcpip channel and a connected TCP socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._pump: asyncio.Task[None] | None = None
        self._draining: asyncio.Task[None] | None = None
        self._eof_from_user = False
        self._eof_from_target = False
        self.rx_bytes = 0
        self.tx_bytes = 0

    # -- channel callbacks ---------------------------------------------------

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self._chan = chan

    def session_started(self) -> None:
        self._pump = asyncio.ensure_future(self._target_to_channel())

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.rx_bytes += len(data)
        self._writer.write(data)
        transport = self._writer.transport
        if self._draining is None and transport.get_write_buffer_size() > HIGH_WATER:
            assert self._chan is not None
            self._chan.pause_reading()
            self._draining = asyncio.ensure_future(self._drain_then_resume())

    def eof_received(self) -> bool:
        self._eof_from_user = True
        with contextlib.suppress(OSError):
            if self._writer.can_write_eof():
                self._writer.write_eof()
        self._close_if_done()
        return True  # keep the channel half open: the target may still answer

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._can_write.set()
        for task in (self._pump, self._draining):
            if task is not None:
                task.cancel()
        self._writer.close()

    # -- copy loops ------------------------------------------------------------

    async def _drain_then_resume(self) -> None:
        try:
            await self._writer.drain()
        except OSError:
            self._abort()
            return
        finally:
            self._draining = None
        if self._chan is not None:
            self._chan.resume_reading()

    async def _target_to_channel(self) -> None:
        assert self._chan is not None
        try:
            while True:
                data = await self._reader.read(CHUNK)
                if not data:
                    break
                self.tx_bytes += len(data)
                self._chan.write(data)
                await self._can_write.wait()
        except OSError:  # target reset, or the channel went away under us
            self._abort()
            return
        self._eof_from_target = True
        with contextlib.suppress(OSError):
            self._chan.write_eof()
        self._close_if_done()

    def _close_if_done(self) -> None:
        if self._eof_from_user and self._eof_from_target and self._chan is not None:
            self._chan.close()

    def _abort(self) -> None:
        if self._chan is not None:
            self._chan.close()
        self._writer.close()

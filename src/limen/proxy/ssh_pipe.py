"""Copy bytes between an SSH channel and a node's stream, with flow control both ways.

Not asyncssh's stock forwarder (it can drop the node's first bytes, the SSH banner,
before the channel is connected) and not redirect() (it loses data under flow control).
The node stream is opened before the channel is confirmed; its reader buffers
whatever the node sends until ``session_started`` starts the node-to-channel copy.

Client to node: asyncssh calls ``data_received`` per packet, often several times for
one read from the client's socket (OpenSSH sends 32 KiB packets). The packets are
gathered and handed to the node's transport once per turn of the event loop, as one
write: one send() system call where there were up to eight. When the transport's
buffer passes ``HIGH_WATER`` the channel stops reading (its SSH window then stops
opening, which slows the client) until the node has taken the backlog.

Node to client: one task reads large chunks and writes them to the channel,
waiting while asyncssh says the channel's send buffer is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncssh

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
HIGH_WATER = 1024 * 1024


class NodePipe(asyncssh.SSHTCPSession[bytes]):
    """One jump channel's data path; ``on_done`` runs once when both sides are closed."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_done: Callable[[NodePipe, Exception | None], None] | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._on_done = on_done
        self._chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self._can_send = asyncio.Event()
        self._can_send.set()
        self._pump: asyncio.Task[None] | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._client_eof = False
        self._node_eof = False
        self._done = False
        self._up: list[bytes] = []  # client packets not yet handed to the node
        self.bytes_up = 0
        self.bytes_down = 0

    # asyncssh session callbacks

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:  # type: ignore[override]
        self._chan = chan

    def session_started(self) -> None:
        self._pump = asyncio.get_running_loop().create_task(self._node_to_client())

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self._done:
            return
        if self._writer.is_closing():  # the node's socket failed on an earlier write
            self._finish(ConnectionResetError("the node closed the connection"))
            return
        self.bytes_up += len(data)
        if not self._up:
            asyncio.get_running_loop().call_soon(self._flush_up)
        self._up.append(data)

    def _flush_up(self) -> None:
        """Hand the gathered client packets to the node in one write."""
        if not self._up or self._done:
            return
        chunks, self._up = self._up, []
        if self._writer.is_closing():  # the node's socket failed on an earlier write
            self._finish(ConnectionResetError("the node closed the connection"))
            return
        self._writer.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if self._drainer is None and self._node_backlog() > HIGH_WATER:
            assert self._chan is not None
            self._chan.pause_reading()
            self._drainer = asyncio.get_running_loop().create_task(self._drain_node())

    def eof_received(self) -> bool:
        self._client_eof = True
        self._flush_up()  # what came before the EOF goes first
        self._send_node_eof()  # asyncio sends the FIN after the queued bytes
        self._finish_if_both_eof()
        return True  # keep the channel half open: the node may still answer

    def pause_writing(self) -> None:
        self._can_send.clear()

    def resume_writing(self) -> None:
        self._can_send.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(exc)

    # copying

    def _node_backlog(self) -> int:
        transport = self._writer.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    async def _drain_node(self) -> None:
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            self._finish(exc)
            return
        self._drainer = None
        if not self._done and self._chan is not None:
            self._chan.resume_reading()

    def _send_node_eof(self) -> None:
        # TCP half-close, so the node sees end of input yet can keep answering.
        with contextlib.suppress(OSError, RuntimeError):
            if self._writer.can_write_eof() and not self._writer.is_closing():
                self._writer.write_eof()

    async def _node_to_client(self) -> None:
        chan = self._chan
        assert chan is not None
        try:
            while True:
                data = await self._reader.read(CHUNK)
                if not data:
                    break
                self.bytes_down += len(data)
                chan.write(data)
                if not self._can_send.is_set():
                    await self._can_send.wait()
            chan.write_eof()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure on either side ends both
            log.debug("jump pipe: node to client copy ended: %r", exc)
            self._finish(exc)
            return
        self._node_eof = True
        self._finish_if_both_eof()

    def _finish_if_both_eof(self) -> None:
        if self._client_eof and self._node_eof:
            self._finish(None)

    def _finish(self, exc: Exception | None) -> None:
        """Close both sides once; safe to call from any callback."""
        if self._done:
            return
        self._done = True
        for task in (self._pump, self._drainer):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        if self._chan is not None:
            self._chan.close()
        if exc is not None and self._writer.transport is not None:
            self._writer.transport.abort()  # an error: drop what is queued for the node
        else:
            if self._up and not self._writer.is_closing():
                self._writer.write(b"".join(self._up))
            self._writer.close()  # a clean end: let queued bytes reach the node first
        self._up = []
        if self._on_done is not None:
            self._on_done(self, exc)

    def abort(self) -> None:
        """Close the node stream of a pipe whose channel never opened."""
        self._finish(ConnectionAbortedError("the channel closed before it opened"))

"""An SSH channel seen as an asyncio (StreamReader, StreamWriter) pair.

The jump host copies bytes between a user's channel and a node "stream"
(``NodeRouter.open_stream``); for a direct node that is a TCP socket. For a tunneled
node it is a channel the proxy opens back through the node's agent. Wrapping that
channel in real asyncio streams keeps the jump host's copy loop (ssh_pipe.NodePipe)
unaware of the difference, with flow control intact both ways:

- node to proxy: the StreamReader asks the transport to pause reading when its
  buffer is full; that stops the channel's window updates, which stops the agent.
- proxy to node: asyncssh calls ``pause_writing`` when the channel's send buffer
  passes its high-water mark; ``StreamWriter.drain`` then waits, as on a socket.

Not asyncssh's stock forwarder (it can drop the first bytes before its channel side is
connected), and nothing here may raise into an asyncssh callback: any exception there
closes the whole tunnel connection, which
would end every session on the node.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncssh

log = logging.getLogger(__name__)

# Bytes buffered towards the node before writers are asked to wait; a socket's
# transport keeps about this much too.
WRITE_HIGH_WATER = 1024 * 1024
READ_LIMIT = 1024 * 1024  # the StreamReader's buffer limit (pauses above twice this)


class ChannelTransport(asyncio.Transport):
    """The asyncio face of one SSH channel, for a StreamWriter to write to."""

    def __init__(self, chan: asyncssh.SSHTCPChannel[bytes], extra: dict[str, Any]) -> None:
        super().__init__(extra)
        self._chan = chan
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        try:
            self._chan.write(bytes(data))
        except (BrokenPipeError, OSError):  # the channel closed under us: drop, like a socket
            self._closing = True

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def write_eof(self) -> None:
        if not self._closing:
            try:
                self._chan.write_eof()
            except (BrokenPipeError, OSError):
                self._closing = True

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return self._chan.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return WRITE_HIGH_WATER // 4, WRITE_HIGH_WATER

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._chan.set_write_buffer_limits(high, low)

    def pause_reading(self) -> None:
        if not self._closing:
            self._chan.pause_reading()

    def resume_reading(self) -> None:
        if not self._closing:
            self._chan.resume_reading()

    def is_reading(self) -> bool:
        return not self._closing

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """A clean close: queued bytes still reach the node, then the channel closes."""
        if not self._closing:
            self._closing = True
            self._chan.close()

    def abort(self) -> None:
        """An error: drop what is queued and close at once."""
        self._closing = True
        self._chan.abort()

    def lost(self) -> None:
        self._closing = True


class _ChannelSession(asyncssh.SSHTCPSession[bytes]):
    """Hands the channel's events to a StreamReaderProtocol."""

    def __init__(self, protocol: asyncio.StreamReaderProtocol, extra: dict[str, Any]) -> None:
        self._protocol = protocol
        self._extra = extra
        self.transport: ChannelTransport | None = None

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:  # type: ignore[override]
        chan.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.transport = ChannelTransport(chan, self._extra)
        self._protocol.connection_made(self.transport)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._protocol.data_received(data)

    def eof_received(self) -> bool:
        self._protocol.eof_received()
        return True  # half-close: the node finished sending, it may still read

    def pause_writing(self) -> None:
        self._protocol.pause_writing()

    def resume_writing(self) -> None:
        self._protocol.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.transport.lost()
        self._protocol.connection_lost(exc)


def stream_session(
    extra: dict[str, Any] | None = None,
) -> tuple[_ChannelSession, asyncio.StreamReader, asyncio.StreamReaderProtocol]:
    """A session factory's product for ``create_connection``, plus its reader.

    After the channel opens, ``writer_for`` makes the matching StreamWriter.
    """
    reader = asyncio.StreamReader(limit=READ_LIMIT)
    protocol = asyncio.StreamReaderProtocol(reader)
    return _ChannelSession(protocol, extra or {}), reader, protocol


def writer_for(
    session: _ChannelSession, reader: asyncio.StreamReader, protocol: asyncio.StreamReaderProtocol
) -> asyncio.StreamWriter:
    assert session.transport is not None, "the channel is not open yet"
    return asyncio.StreamWriter(session.transport, protocol, reader, asyncio.get_running_loop())

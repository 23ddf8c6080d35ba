"""Splice this process's stdin and stdout to an SSH channel (`limen proxy ssh`).

The ssh that runs us as its ProxyCommand moves every byte of its session through here,
so the copy is done at the protocol level, without a task or a StreamReader per
direction: each chunk asyncio reads is handed straight to the other side in the
callback that received it. Flow control is the transports' own:

- stdin to channel: when the channel's send buffer passes its high-water mark asyncssh
  calls ``pause_writing``, and we stop reading stdin until ``resume_writing``;
- channel to stdout: when the stdout pipe's buffer passes its high-water mark asyncio
  calls ``pause_writing`` on its protocol, and we stop reading the channel (its SSH
  window then stops opening) until the pipe drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

import asyncssh

from limen.client.pipes import widen_pipe

WINDOW = 8 * 1024 * 1024  # the channel's receive window, as the jump host's
# What the proxy may send in one packet (asyncssh's default is 32 KiB): the per-packet
# work in Python is the same whatever the size, so fewer, larger packets cost less.
MAX_PACKET = 128 * 1024


class _StdoutProtocol(asyncio.Protocol):
    """The stdout pipe's flow-control callbacks, forwarded to the channel."""

    def __init__(self, splice: StdioSplice) -> None:
        self._splice = splice
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def pause_writing(self) -> None:
        self._splice.pause_channel()

    def resume_writing(self) -> None:
        self._splice.resume_channel()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self._splice.stdout_lost(exc)


class _StdinProtocol(asyncio.Protocol):
    def __init__(self, splice: StdioSplice) -> None:
        self._splice = splice

    def data_received(self, data: bytes) -> None:
        self._splice.stdin_data(data)

    def eof_received(self) -> bool:
        self._splice.stdin_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._splice.stdin_eof()


class StdioSplice(asyncssh.SSHTCPSession[bytes]):
    """The channel's session: what arrives goes to stdout, what stdin gives goes out."""

    def __init__(self) -> None:
        self._chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self._stdin: asyncio.ReadTransport | None = None
        self._stdout: asyncio.WriteTransport | None = None
        self._stdout_protocol: _StdoutProtocol | None = None
        self._stdin_done = False
        self._channel_paused = False  # by stdout back pressure
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def attach_stdout(self, stdout: Any) -> None:
        """Before the channel opens: the node's first bytes (its banner) may come in
        the same read as the open confirmation."""
        protocol = _StdoutProtocol(self)
        self._stdout_protocol = protocol
        self._stdout, _ = await asyncio.get_running_loop().connect_write_pipe(
            lambda: protocol, stdout)

    async def attach_stdin(self, stdin: Any) -> None:
        """Once the channel is open: every byte read has somewhere to go."""
        self._stdin, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: _StdinProtocol(self), stdin)

    # channel side (asyncssh callbacks)

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:  # type: ignore[override]
        self._chan = chan
        if self._channel_paused:  # stdout filled up before the channel was ours
            chan.pause_reading()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self._stdout is not None and not self._stdout.is_closing():
            self._stdout.write(data)

    def eof_received(self) -> bool:
        self._close_stdout()
        return False  # the node is done: close the channel once our side is too

    def pause_writing(self) -> None:
        if self._stdin is not None and not self._stdin_done:
            self._stdin.pause_reading()

    def resume_writing(self) -> None:
        if self._stdin is not None and not self._stdin_done:
            self._stdin.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._close_stdout()
        if self._stdin is not None:
            self._stdin.close()
        self._finish_when_flushed(exc)

    # pipe side

    def stdin_data(self, data: bytes) -> None:
        if self._chan is not None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self._chan.write(data)

    def stdin_eof(self) -> None:
        if self._stdin_done:
            return
        self._stdin_done = True
        if self._chan is not None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self._chan.write_eof()

    def pause_channel(self) -> None:
        self._channel_paused = True
        if self._chan is not None:
            self._chan.pause_reading()

    def resume_channel(self) -> None:
        self._channel_paused = False
        if self._chan is not None:
            self._chan.resume_reading()

    def stdout_lost(self, exc: Exception | None) -> None:
        # ssh went away (or closed its end): nothing more can be delivered.
        if self._chan is not None:
            self._chan.close()

    def _close_stdout(self) -> None:
        if self._stdout is not None and not self._stdout.is_closing():
            self._stdout.close()  # after what is buffered has been written

    def _finish_when_flushed(self, exc: Exception | None) -> None:
        protocol = self._stdout_protocol

        def finish(_: object = None) -> None:
            if not self.done.done():
                self.done.set_result(None)

        if protocol is None or protocol.closed.done():
            finish()
        else:
            protocol.closed.add_done_callback(finish)


async def splice_stdio(conn: asyncssh.SSHClientConnection, host: str, port: int) -> None:
    """Open a direct-tcpip channel to host:port and splice stdin/stdout to it until
    both directions end; raises what opening the channel raises."""
    splice = StdioSplice()
    for stream in (sys.stdin, sys.stdout):
        widen_pipe(stream.fileno())
    await splice.attach_stdout(sys.stdout.buffer)
    chan, _ = await conn.create_connection(lambda: splice, host, port, window=WINDOW,
                                         max_pktsize=MAX_PACKET)
    try:
        await splice.attach_stdin(sys.stdin.buffer)
        await splice.done
    finally:
        chan.close()


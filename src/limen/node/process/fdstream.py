"""Non-blocking reads and writes on a raw file descriptor (pipe end or pty master).

The session's copy loops use these instead of asyncio subprocess streams or
asyncssh's redirect(): each read is written out and drained before the next read,
so flow control holds end to end and nothing is dropped (redirect() was seen to start a
second feed while the first waited and truncate large transfers).
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable
from typing import Any

Watch = Callable[..., Any]  # loop.add_reader / add_writer
Unwatch = Callable[[int], Any]  # loop.remove_reader / remove_writer


class FdStream:
    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._waiters: set[asyncio.Future[None]] = set()

    @property
    def closed(self) -> bool:
        return self._closed

    async def _ready(self, add: Watch, remove: Unwatch,
                     stop: asyncio.Future[object] | None) -> bool:
        """Wait until the fd is ready; False if ``stop`` finished first."""
        ready: asyncio.Future[None] = self._loop.create_future()
        add(self.fd, lambda: ready.done() or ready.set_result(None))
        self._waiters.add(ready)
        try:
            if stop is None:
                await ready
            else:
                await asyncio.wait({ready, stop}, return_when=asyncio.FIRST_COMPLETED)
            return ready.done() and not self._closed
        finally:
            self._waiters.discard(ready)
            if not self._closed:  # close() already unregistered; the number may be reused
                remove(self.fd)
            ready.cancel()

    async def read(self, size: int, stop: asyncio.Future[object] | None = None) -> bytes:
        """Read up to ``size`` bytes; b"" at end of file.

        A pty master reports EIO once every slave fd is closed: that is end of file.
        With ``stop``: once it is done, return b"" as soon as nothing more is readable
        (a pty whose shell has exited, but a background job still holds the slave).
        """
        while not self._closed:
            try:
                return os.read(self.fd, size)
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return b""
                raise
            if stop is not None and stop.done():
                return b""
            if not await self._ready(self._loop.add_reader, self._loop.remove_reader, stop):
                return b""
        return b""

    async def write(self, data: bytes) -> None:
        """Write all of ``data``, waiting while the pipe or pty is full."""
        view = memoryview(data)
        while view:
            if self._closed:
                raise BrokenPipeError("stream closed")
            try:
                written = os.write(self.fd, view)
            except BlockingIOError:
                await self._ready(self._loop.add_writer, self._loop.remove_writer, None)
                continue
            view = view[written:]

    def close(self) -> None:
        """Close the fd; a read or write waiting on it wakes up (b"" / BrokenPipeError)."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self.fd)
        self._loop.remove_writer(self.fd)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        os.close(self.fd)

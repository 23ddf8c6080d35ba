"""Bytes from the user on their way to a process's stdin, with back pressure.

Channel data arrives by callback; a writer task drains it into the process. When more
than HIGH_WATER bytes wait, the channel stops reading (so the SSH window closes and the
client slows down) until the process has taken the queue below LOW_WATER.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from limen.node.process.fdstream import FdStream

Write = Callable[[bytes], Awaitable[None]]


class InputGate(Protocol):
    """Stands between the queue and the process (transfer.py's TransferGate)."""

    async def pass_on(self, chunk: bytes, write: Write) -> bool:
        """Write what of ``chunk`` may reach the process (now or later); False: stop."""
        ...

    async def at_eof(self, write: Write) -> None:
        """Write what was held back, at the end of the input."""
        ...

HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024


class InputQueue:
    def __init__(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        self._pause = pause
        self._resume = resume
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._paused = False
        self._eof = False
        self._discarding = False
        self._wakeup = asyncio.Event()

    def put(self, data: bytes) -> None:
        if self._discarding:
            return
        self._chunks.append(data)
        self._queued += len(data)
        self._wakeup.set()
        if not self._paused and self._queued > HIGH_WATER:
            self._paused = True
            self._pause()

    def put_eof(self) -> None:
        self._eof = True
        self._wakeup.set()

    def discard(self) -> None:
        """The process is gone: drop what waits and whatever still comes."""
        self._discarding = True
        self._chunks.clear()
        self._queued = 0
        self._wakeup.set()
        self._unpause()

    def _unpause(self) -> None:
        if self._paused:
            self._paused = False
            self._resume()

    async def _next(self) -> bytes | None:
        while not self._chunks:
            if self._eof or self._discarding:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        chunk = self._chunks.popleft()
        self._queued -= len(chunk)
        if self._queued <= LOW_WATER:
            self._unpause()
        return chunk

    async def feed(self, stream: FdStream, close_at_eof: bool,
                   gate: InputGate | None = None) -> None:
        """Write everything into ``stream`` (through ``gate`` when there is one); close it
        at end of input if asked."""
        try:
            while (chunk := await self._next()) is not None:
                if gate is None:
                    await stream.write(chunk)
                elif not await gate.pass_on(chunk, stream.write):
                    self.discard()
                    return
            if gate is not None and self._eof:
                await gate.at_eof(stream.write)
        except OSError:  # the process closed its stdin or exited
            self.discard()
            return
        if close_at_eof and self._eof:
            stream.close()

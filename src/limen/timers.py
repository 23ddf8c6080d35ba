"""Timers at clock times, driven by the event loop or, in tests, by hand.

Sessions and connections end at a certificate's expiry or after an idle period.
Production uses the event loop's timers; unit tests move a ``FakeClock`` and fire what
is due (``ManualTimers``), so no test has to sleep and hope. ``LoopTimers`` on a
``FakeClock`` re-aim whenever a test moves the clock, so a whole cluster on a fake clock
reacts to a jump past an expiry at once.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from limen.clock import Clock, FakeClock, RealClock


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Timers(Protocol):
    clock: Clock

    def call_at(self, when: datetime, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` (on the event loop) once ``clock.now() >= when``."""
        ...


class _LoopHandle:
    """One timer on the loop; re-armed when the clock jumps."""

    def __init__(self, timers: LoopTimers, when: datetime, callback: Callable[[], None]) -> None:
        self.when = when
        self._timers = timers
        self._callback = callback
        self._loop_handle: asyncio.TimerHandle | None = None
        self.cancelled = False

    def arm(self, loop: asyncio.AbstractEventLoop, now: datetime) -> None:
        if self._loop_handle is not None:
            self._loop_handle.cancel()
        delay = max(0.0, (self.when - now).total_seconds())
        self._loop_handle = loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timers.forget(self)
        if not self.cancelled:
            self._callback()

    def cancel(self) -> None:
        self.cancelled = True
        self._timers.forget(self)
        if self._loop_handle is not None:
            self._loop_handle.cancel()


class LoopTimers:
    """Event-loop timers: the delay to ``when`` is measured on the clock, then slept.

    On a ``FakeClock`` every jump re-aims the pending timers (the jump may come from
    another thread: a test driving a cluster that runs in the background).
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or RealClock()
        self._pending: set[_LoopHandle] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        if isinstance(self.clock, FakeClock):
            self.clock.add_listener(self._clock_jumped)

    def call_at(self, when: datetime, callback: Callable[[], None]) -> TimerHandle:
        self._loop = asyncio.get_running_loop()
        handle = _LoopHandle(self, when, callback)
        self._pending.add(handle)
        handle.arm(self._loop, self.clock.now())
        return handle

    def forget(self, handle: _LoopHandle) -> None:
        self._pending.discard(handle)

    def _clock_jumped(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._rearm)

    def _rearm(self) -> None:
        now = self.clock.now()
        for handle in list(self._pending):
            handle.arm(asyncio.get_running_loop(), now)


class _ManualHandle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualTimers:
    """Timers that fire only when a test advances the fake clock."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock: FakeClock = clock or FakeClock()
        self._heap: list[tuple[datetime, int, _ManualHandle, Callable[[], None]]] = []
        self._order = itertools.count()

    def call_at(self, when: datetime, callback: Callable[[], None]) -> TimerHandle:
        handle = _ManualHandle()
        heapq.heappush(self._heap, (when, next(self._order), handle, callback))
        return handle

    def pending(self) -> int:
        return sum(1 for _, _, handle, _ in self._heap if not handle.cancelled)

    def advance(self, delta: timedelta | float) -> int:
        """Move the clock and run every timer now due; returns how many ran."""
        self.clock.advance(delta)
        return self.fire_due()

    def fire_due(self) -> int:
        fired = 0
        now = self.clock.now()
        while self._heap and self._heap[0][0] <= now:
            _, _, handle, callback = heapq.heappop(self._heap)
            if not handle.cancelled:
                callback()
                fired += 1
        return fired

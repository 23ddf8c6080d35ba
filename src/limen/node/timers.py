"""Timers at wall-clock times, driven by the event loop or, in tests, by hand.

Sessions end at a certificate's expiry or after an idle period. Production uses the
event loop's timers; tests move a ``FakeClock`` and fire what is due, so no test has
to sleep and hope.
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


class LoopTimers:
    """Real timers: the delay to ``when`` is measured on the clock, then slept by the loop."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or RealClock()

    def call_at(self, when: datetime, callback: Callable[[], None]) -> TimerHandle:
        delay = max(0.0, (when - self.clock.now()).total_seconds())
        return asyncio.get_running_loop().call_later(delay, callback)


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

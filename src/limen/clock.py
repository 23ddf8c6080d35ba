"""Injectable time: the real clock for production, a fake one that tests move by hand."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class RealClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FakeClock:
    """A clock that tests move by hand.

    By default it stands still at the real time of its creation. With
    ``follow_real_time=True`` it runs with the wall clock plus whatever the test
    added, which suits a cluster shared by many tests: certificates it stamps stay
    valid for real clients (ssh, ssh-keygen) while tests still jump ahead at will.
    """

    def __init__(self, start: datetime | None = None, follow_real_time: bool = False) -> None:
        self._start = start or datetime.now(UTC)
        self._follow = follow_real_time
        self._offset = timedelta(0)
        self._real_start = time.monotonic()
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after every jump (from the thread that moved the clock), so
        timers armed for a clock time can re-aim."""
        with self._lock:
            self._listeners.append(callback)

    def _jumped(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for callback in listeners:
            callback()

    def now(self) -> datetime:
        with self._lock:
            now = self._start + self._offset
            if self._follow:
                now += timedelta(seconds=time.monotonic() - self._real_start)
            return now

    def advance(self, delta: timedelta | float) -> datetime:
        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=delta)
        with self._lock:
            self._offset += delta
        self._jumped()
        return self.now()

    def set(self, when: datetime) -> None:
        with self._lock:
            self._start, self._offset, self._real_start = when, timedelta(0), time.monotonic()
        self._jumped()


def utcnow(clock: Clock | None = None) -> datetime:
    return (clock or RealClock()).now()

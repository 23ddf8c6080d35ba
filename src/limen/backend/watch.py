"""Watchers: a consumer's view of the stream of committed changes under some prefixes.

Usage::

    async with backend.watch(["/users/", "/locks/"]) as w:
        async for event in w:          # or: event = await w.next(timeout=1.0)
            ...

Once ``__aenter__`` returns, every change committed later under any of the prefixes is
delivered, in commit order. The backend pushes events into a bounded buffer and never
waits for the consumer: if the buffer fills up the watcher is closed with LimitExceeded,
which the consumer sees on its next read and answers by re-reading what it cares about
(``range``) and watching again. Events are never dropped without that error.

A watcher ends normally (``async for`` stops, ``next`` returns None) when its consumer
closes it or the backend is closed; it ends with an error (ConnectionProblem,
LimitExceeded) when the stream broke and the consumer must re-sync.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType

from limen.backend.base import Event, check_prefix
from limen.errors import BadParameter, LimenError, LimitExceeded

#: How many undelivered events a watcher may hold before it is closed as too slow.
DEFAULT_WATCH_CAPACITY = 8192


class Watcher:
    """One subscription. Created by ``Backend.watch``; the backend calls ``deliver``."""

    def __init__(
        self,
        prefixes: Sequence[str],
        *,
        attach: Callable[[Watcher], Awaitable[None]],
        detach: Callable[[Watcher], None],
        capacity: int = DEFAULT_WATCH_CAPACITY,
    ) -> None:
        if isinstance(prefixes, str):
            # A bare string would be taken as a list of one-character prefixes.
            raise BadParameter("watch() takes a list of key prefixes, not a single string.")
        self.prefixes: tuple[str, ...] = tuple(check_prefix(p) for p in prefixes)
        if not self.prefixes:
            raise BadParameter("watch() needs at least one key prefix.")
        if capacity < 1:
            raise BadParameter("A watcher's capacity must be at least 1.")
        self._attach = attach
        self._detach = detach
        self._capacity = capacity
        self._buffer: deque[Event] = deque()
        self._wakeup = asyncio.Event()
        self._entered = False
        self._closed = False
        self._error: LimenError | None = None

    # -- consumer side ------------------------------------------------------------------

    async def __aenter__(self) -> Watcher:
        if self._entered:
            raise BadParameter("A watcher can be entered only once.")
        self._entered = True
        await self._attach(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> Watcher:
        return self

    async def __anext__(self) -> Event:
        event = await self.next()
        if event is None:
            raise StopAsyncIteration
        return event

    async def next(self, timeout: float | None = None) -> Event | None:
        """The next event, or None once the watcher has ended normally.

        Raises the error the watcher was closed with (the consumer must re-sync), and
        TimeoutError if no event arrived within ``timeout`` seconds.
        """
        if not self._entered:
            raise BadParameter("Enter the watcher with 'async with' before reading from it.")
        async with asyncio.timeout(timeout):
            while True:
                if self._buffer:
                    return self._buffer.popleft()
                if self._closed:
                    if self._error is not None:
                        raise self._error
                    return None
                self._wakeup.clear()
                await self._wakeup.wait()

    def close(self, error: LimenError | None = None) -> None:
        """End the watcher; with ``error`` the consumer gets that error instead of an end.

        Pending events are discarded: after an error the consumer re-syncs anyway, and
        after a normal close it asked to stop.
        """
        if self._closed:
            return
        self._closed = True
        self._error = error
        self._buffer.clear()
        self._wakeup.set()
        self._detach(self)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def error(self) -> LimenError | None:
        return self._error

    # -- backend side -------------------------------------------------------------------

    def matches(self, key: str) -> bool:
        return key.startswith(self.prefixes)

    def deliver(self, event: Event) -> None:
        """Queue ``event`` if it is under a watched prefix. Never blocks."""
        if self._closed or not self.matches(event.item.key):
            return
        if len(self._buffer) >= self._capacity:
            self.close(
                LimitExceeded(
                    f"The watcher fell more than {self._capacity} events behind and was "
                    "closed; read the current state again and start a new watch."
                )
            )
            return
        self._buffer.append(event)
        self._wakeup.set()


class WatcherGroups:
    """A backend's watchers, grouped by the prefixes they watch, so that a change is
    matched once per distinct set of prefixes rather than once per watcher: every node's
    access feed watches the same three prefixes, and with 3,000 nodes every change (a
    node's presence, a session's tracker) was matched 3,000 times.

    Each watcher has the id of the last change committed before it attached (``since``;
    0 where changes have no ids): it is given only later changes."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, ...], dict[Watcher, int]] = {}

    def add(self, watcher: Watcher, since: int = 0) -> None:
        self._groups.setdefault(watcher.prefixes, {})[watcher] = since

    def discard(self, watcher: Watcher) -> None:
        members = self._groups.get(watcher.prefixes)
        if members is not None:
            members.pop(watcher, None)
            if not members:
                del self._groups[watcher.prefixes]

    def __bool__(self) -> bool:
        return bool(self._groups)

    def __len__(self) -> int:
        return sum(len(members) for members in self._groups.values())

    def all(self) -> list[Watcher]:
        return [watcher for members in self._groups.values() for watcher in members]

    def deliver(self, event: Event, change_id: int = 0) -> None:
        """Hand ``event`` (change ``change_id``) to every watcher it concerns."""
        key = event.item.key
        for prefixes, members in list(self._groups.items()):
            if key.startswith(prefixes):
                for watcher, since in list(members.items()):
                    if change_id == 0 or change_id > since:
                        watcher.deliver(event)

"""An in-process Backend: a dict plus a sorted key list. For tests and quick experiments.

Every operation runs without awaiting anything in between its read and its write, so
on one event loop each one is atomic and watchers see changes in exactly the order they
happened. Nothing survives the process.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Sequence
from dataclasses import replace

from limen.backend.base import (
    DEFAULT_SWEEP_INTERVAL,
    Event,
    Item,
    OpType,
    check_item,
    check_items,
    check_key,
    check_limit,
    check_prefix,
    is_expired,
    new_revision,
    sweep_forever,
)
from limen.backend.watch import DEFAULT_WATCH_CAPACITY, Watcher, WatcherGroups
from limen.clock import Clock, RealClock
from limen.errors import AlreadyExists, BadParameter, CompareFailed, ConnectionProblem, NotFound


class MemoryBackend:
    """Backend kept in a dict. ``start()`` begins background sweeping (open_backend does)."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        watch_capacity: int = DEFAULT_WATCH_CAPACITY,
    ) -> None:
        self.clock = clock or RealClock()
        #: Buffer size of watchers created from now on (see limen.backend.watch).
        self.watch_capacity = watch_capacity
        self._items: dict[str, Item] = {}
        self._keys: list[str] = []  # sorted, for range queries
        self._watchers = WatcherGroups()
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False

    def start(self, sweep_interval: float | None = DEFAULT_SWEEP_INTERVAL) -> None:
        """Start the background sweeper (None: only explicit ``sweep()`` calls)."""
        if sweep_interval is not None and self._sweeper is None:
            self._sweeper = asyncio.create_task(
                sweep_forever(self, sweep_interval), name="limen-memory-sweeper"
            )

    # -- internals ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionProblem("The storage backend is closed.")

    def _live(self, key: str) -> Item | None:
        item = self._items.get(key)
        if item is None or is_expired(item.expires, self.clock.now()):
            return None
        return item

    def _store(self, item: Item) -> Item:
        stored = replace(item, revision=new_revision())
        if stored.key not in self._items:
            bisect.insort(self._keys, stored.key)
        self._items[stored.key] = stored
        self._publish(Event(OpType.PUT, stored))
        return stored

    def _remove(self, key: str) -> None:
        del self._items[key]
        del self._keys[bisect.bisect_left(self._keys, key)]
        self._publish(Event(OpType.DELETE, Item(key, b"")))

    def _publish(self, event: Event) -> None:
        self._watchers.deliver(event)

    def _keys_under(self, prefix: str) -> list[str]:
        start = bisect.bisect_left(self._keys, prefix)
        keys = []
        for key in self._keys[start:]:
            if not key.startswith(prefix):
                break
            keys.append(key)
        return keys

    async def _attach(self, watcher: Watcher) -> None:
        self._check_open()
        self._watchers.add(watcher)

    def _detach(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    # -- Backend ------------------------------------------------------------------------

    async def get(self, key: str) -> Item:
        self._check_open()
        item = self._live(check_key(key))
        if item is None:
            raise NotFound(f"Key {key!r} is not found.")
        return item

    async def put(self, item: Item) -> Item:
        self._check_open()
        return self._store(check_item(item))

    async def put_many(self, items: Sequence[Item]) -> list[Item]:
        self._check_open()
        return [self._store(item) for item in check_items(items)]

    async def create(self, item: Item) -> Item:
        self._check_open()
        item = check_item(item)
        if self._live(item.key) is not None:
            raise AlreadyExists(f"Key {item.key!r} already exists.")
        return self._store(item)

    async def update(self, item: Item) -> Item:
        self._check_open()
        item = check_item(item)
        if self._live(item.key) is None:
            raise NotFound(f"Key {item.key!r} is not found.")
        return self._store(item)

    async def compare_and_swap(self, expected: Item, new: Item) -> Item:
        self._check_open()
        expected, new = check_item(expected), check_item(new)
        if expected.key != new.key:
            raise BadParameter("compare_and_swap needs the expected and new items to share a key.")
        current = self._live(new.key)
        if current is None or current.value != expected.value:
            raise CompareFailed(f"Key {new.key!r} changed or is gone; read it again and retry.")
        return self._store(new)

    async def delete(self, key: str) -> None:
        self._check_open()
        if self._live(check_key(key)) is None:
            raise NotFound(f"Key {key!r} is not found.")
        self._remove(key)

    async def delete_many(self, keys: Sequence[str]) -> int:
        self._check_open()
        live = [key for key in dict.fromkeys(map(check_key, keys)) if self._live(key)]
        for key in live:
            self._remove(key)
        return len(live)

    async def range(self, prefix: str, limit: int | None = None) -> list[Item]:
        self._check_open()
        prefix, limit = check_prefix(prefix), check_limit(limit)
        result: list[Item] = []
        for key in self._keys_under(prefix):
            item = self._live(key)
            if item is not None:
                result.append(item)
                if limit is not None and len(result) >= limit:
                    break
        return result

    async def delete_range(self, prefix: str) -> int:
        self._check_open()
        prefix = check_prefix(prefix)
        count = 0
        for key in self._keys_under(prefix):
            # Expired leftovers go too (with their DELETE event, as the sweeper would
            # send), but only live items count as deleted.
            count += self._live(key) is not None
            self._remove(key)
        return count

    def watch(self, prefixes: Sequence[str]) -> Watcher:
        return Watcher(
            prefixes, attach=self._attach, detach=self._detach, capacity=self.watch_capacity
        )

    async def sweep(self) -> int:
        self._check_open()
        now = self.clock.now()
        expired = [k for k in self._keys if is_expired(self._items[k].expires, now)]
        for key in expired:
            self._remove(key)
        return len(expired)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        for watcher in self._watchers.all():
            watcher.close()

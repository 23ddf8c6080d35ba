"""A Backend that measures each operation of the one it wraps (limen_backend_operation_seconds).

Wrapping at the one place the service opens its backend keeps timing out of the storage
engines themselves.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from limen.backend.base import Backend, Item
from limen.backend.watch import Watcher
from limen.diag import metrics

T = TypeVar("T")


class TimedBackend:
    def __init__(self, inner: Backend) -> None:
        self.inner = inner

    async def _timed(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        try:
            return await call()
        finally:
            metrics.backend_operation(operation, time.perf_counter() - started)

    async def get(self, key: str) -> Item:
        return await self._timed("get", lambda: self.inner.get(key))

    async def put(self, item: Item) -> Item:
        return await self._timed("put", lambda: self.inner.put(item))

    async def put_many(self, items: Sequence[Item]) -> list[Item]:
        return await self._timed("put_many", lambda: self.inner.put_many(items))

    async def create(self, item: Item) -> Item:
        return await self._timed("create", lambda: self.inner.create(item))

    async def update(self, item: Item) -> Item:
        return await self._timed("update", lambda: self.inner.update(item))

    async def compare_and_swap(self, expected: Item, new: Item) -> Item:
        return await self._timed("compare_and_swap",
                                 lambda: self.inner.compare_and_swap(expected, new))

    async def delete(self, key: str) -> None:
        return await self._timed("delete", lambda: self.inner.delete(key))

    async def delete_many(self, keys: Sequence[str]) -> int:
        return await self._timed("delete_many", lambda: self.inner.delete_many(keys))

    async def range(self, prefix: str, limit: int | None = None) -> list[Item]:
        return await self._timed("range", lambda: self.inner.range(prefix, limit))

    async def delete_range(self, prefix: str) -> int:
        return await self._timed("delete_range", lambda: self.inner.delete_range(prefix))

    def watch(self, prefixes: Sequence[str]) -> Watcher:
        return self.inner.watch(prefixes)

    async def sweep(self) -> int:
        return await self._timed("sweep", self.inner.sweep)

    async def close(self) -> None:
        await self.inner.close()

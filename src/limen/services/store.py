"""A typed store for one kind of resource under one key prefix."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from limen.backend.base import Backend, Item
from limen.errors import AlreadyExists, CompareFailed, NotFound
from limen.resources.base import Resource

R = TypeVar("R", bound=Resource)


class ResourceStore(Generic[R]):
    """CRUD for resources of `model` stored at PREFIX/NAME[SUFFIX]."""

    def __init__(self, backend: Backend, model: type[R], prefix: str, suffix: str = "") -> None:
        self.backend = backend
        self.model = model
        self.prefix = prefix.rstrip("/") + "/"
        self.suffix = suffix

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}{self.suffix}"

    def _item(self, resource: R) -> Item:
        return Item(
            key=self.key(resource.name),
            value=resource.to_bytes(),
            expires=resource.metadata.expires,
        )

    def _load(self, item: Item) -> R:
        return self.model.from_bytes(item.value, item.revision)

    async def get(self, name: str) -> R:
        try:
            return self._load(await self.backend.get(self.key(name)))
        except NotFound:
            raise NotFound(f"{self.model.KIND} {name!r} does not exist") from None

    async def list(self) -> list[R]:
        items = await self.backend.range(self.prefix)
        return [self._load(i) for i in items if i.key.endswith(self.suffix) and self._direct(i.key)]

    def _direct(self, key: str) -> bool:
        middle = key[len(self.prefix) : len(key) - len(self.suffix) if self.suffix else None]
        return "/" not in middle

    async def create(self, resource: R) -> R:
        try:
            return self._load(await self.backend.create(self._item(resource)))
        except AlreadyExists:
            raise AlreadyExists(f"{self.model.KIND} {resource.name!r} already exists") from None

    async def upsert(self, resource: R) -> R:
        return self._load(await self.backend.put(self._item(resource)))

    async def upsert_many(self, resources: Sequence[R]) -> list[R]:
        """Several resources in one storage transaction (names must differ)."""
        stored = await self.backend.put_many([self._item(r) for r in resources])
        return [self._load(item) for item in stored]

    async def delete(self, name: str) -> None:
        try:
            await self.backend.delete(self.key(name))
        except NotFound:
            raise NotFound(f"{self.model.KIND} {name!r} does not exist") from None

    async def delete_many(self, names: Sequence[str]) -> int:
        """Remove those of ``names`` that exist, in one storage transaction; returns how
        many were removed."""
        return await self.backend.delete_many([self.key(name) for name in names])

    async def modify(self, name: str, change: Callable[[R], Awaitable[None] | None]) -> R:
        """Read, change, compare-and-swap; retried when another writer got there first."""
        for _ in range(20):
            item = await self.raw(name)
            resource = self._load(item)
            result = change(resource)
            if result is not None:
                await result
            try:
                new = await self.backend.compare_and_swap(item, self._item(resource))
            except CompareFailed:
                continue
            return self._load(new)
        raise CompareFailed(f"{self.model.KIND} {name!r} kept changing; try again")

    async def raw(self, name: str) -> Item:
        try:
            return await self.backend.get(self.key(name))
        except NotFound:
            raise NotFound(f"{self.model.KIND} {name!r} does not exist") from None

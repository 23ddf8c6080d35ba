"""One node per name: /node_names/NAME holds the id of the node registered under it.

A node's name is in its host certificate and is what people type, so two nodes may
never hold one. Claims are made with the backend's create and compare-and-swap, so two
joins racing for a name cannot both win. A claim whose node is no longer registered
(removed, or its credentials lapsed) is stale and may be taken over; the caller says
which nodes are registered.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

from limen.backend.base import Backend, Item
from limen.errors import AlreadyExists, CompareFailed, NotFound

PREFIX = "/node_names/"


class NameTaken(AlreadyExists):
    """The name is held by another registered node (``holder``, its id)."""

    def __init__(self, name: str, holder: str) -> None:
        super().__init__(
            f"a node named {name!r} is already registered (id {holder}); choose another "
            f"--name, or remove that node first with: limen rm node/{name}"
        )
        self.holder = holder


class NodeNames:
    def __init__(self, backend: Backend, registered: Callable[[str], Awaitable[bool]]) -> None:
        self.backend = backend
        self._registered = registered

    @staticmethod
    def key(name: str) -> str:
        return PREFIX + name.lower()  # host names compare without case

    async def holder(self, name: str) -> str | None:
        """The id of the registered node holding ``name``, or None."""
        try:
            item = await self.backend.get(self.key(name))
        except NotFound:
            return None
        holder = item.value.decode()
        return holder if await self._registered(holder) else None

    async def claim(self, name: str, node_id: str) -> None:
        """Make ``node_id`` the holder of ``name``; NameTaken if a registered node has it."""
        key = self.key(name)
        new = Item(key=key, value=node_id.encode())
        for _ in range(20):
            try:
                await self.backend.create(new)
                return
            except AlreadyExists:
                pass
            try:
                current = await self.backend.get(key)
            except NotFound:
                continue  # released meanwhile: try to create it again
            holder = current.value.decode()
            if holder == node_id:
                return
            if await self._registered(holder):
                raise NameTaken(name, holder)
            with contextlib.suppress(CompareFailed):
                await self.backend.compare_and_swap(current, new)
                return
        raise CompareFailed(f"the node name {name!r} kept changing hands; try again")

    async def release(self, name: str, node_id: str) -> None:
        """Give ``name`` up if ``node_id`` holds it (a stale claim is harmless anyway)."""
        with contextlib.suppress(NotFound):
            current = await self.backend.get(self.key(name))
            if current.value.decode() == node_id:
                await self.backend.delete(self.key(name))

"""The nodes' open streams ask at every ping whether their node is still registered and
unlocked. The registry answers a good standing from the watch-fed view (no storage read:
with thousands of nodes those reads were most of an idle proxy's work), and checks any
refusal of the view in the storage, since the view may lag it."""

from __future__ import annotations

import asyncio

from limen.auth.node_registry import NodeRegistry
from limen.resources import Lock, Node


async def _until(check, what: str) -> None:  # noqa: ANN001 - tiny helper
    async with asyncio.timeout(10):
        while not await check():
            await asyncio.sleep(0.01)


async def test_a_good_standing_comes_from_the_view_without_the_storage(
    viewed: NodeRegistry,
) -> None:
    await viewed.ctx.stores.backend.close()  # from here on, any storage read fails
    assert await viewed.in_good_standing("id-1")


async def test_the_views_refusals_are_checked_in_the_storage(viewed: NodeRegistry) -> None:
    stores = viewed.ctx.stores
    assert viewed.view is not None
    await viewed.view.stop()  # the view stops following: it lags the storage from now on
    await stores.nodes.create(Node(metadata={"name": "id-2"}, spec={"hostname": "web-2"}))
    assert await viewed.in_good_standing("id-2")  # joined after the view's snapshot
    await stores.locks.create(Lock(metadata={"name": "l-1"},
                                   spec={"target": {"node": "web-1"}}))
    assert await viewed.in_good_standing("id-1")  # the lagging view still says good
    await stores.nodes.delete("id-2")
    assert not await viewed.in_good_standing("id-2")  # gone: the storage says so


async def test_a_following_view_ends_a_locked_nodes_standing(viewed: NodeRegistry) -> None:
    assert await viewed.in_good_standing("id-1")
    await viewed.ctx.stores.locks.create(Lock(metadata={"name": "l-1"},
                                              spec={"target": {"node": "web-1"}}))

    async def out() -> bool:
        return not await viewed.in_good_standing("id-1")

    await _until(out, "the lock")
    assert not await viewed.in_good_standing("id-1")
    assert await viewed.in_good_standing("missing") is False


async def test_without_a_view_the_storage_answers(registry: NodeRegistry) -> None:
    assert await registry.in_good_standing("id-1")
    assert not await registry.in_good_standing("missing")
    await registry.ctx.stores.locks.create(Lock(metadata={"name": "l-1"},
                                                spec={"target": {"node": "id-1"}}))
    assert not await registry.in_good_standing("id-1")

"""The nodes' open streams ask at every ping whether their node is still registered and
unlocked, and every request a node makes shows its API token (``admit``). The registry
answers a good standing and a current token from the watch-fed view (no storage read:
with thousands of nodes those reads were most of an idle proxy's work), and checks
anything short of that in the storage, since the view may lag it."""

from __future__ import annotations

import asyncio

import pytest

from limen.auth import node_credentials as creds
from limen.auth.node_registry import NodeRegistry
from limen.errors import AccessDenied
from limen.resources import Lock, Node
from limen.services.sessions import APISession, APISessionStore


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


async def _with_token(registry: NodeRegistry, node_id: str, token: str) -> APISession:
    """The node's API session for ``token``, made its current token in the storage."""
    node = await registry.ctx.stores.nodes.get(node_id)
    node.spec.token_id = creds.token_id(token)
    await registry.ctx.stores.nodes.upsert(node)
    return APISessionStore.for_token(token, node_id, None, "node")


async def _view_has_token(registry: NodeRegistry, node_id: str, token: str) -> None:
    async def seen() -> bool:
        assert registry.view is not None
        known = registry.view.node(node_id)
        return known is not None and known.spec.token_id == creds.token_id(token)

    await _until(seen, "the token")


async def test_a_current_token_is_admitted_by_the_view_without_the_storage(
    viewed: NodeRegistry,
) -> None:
    session = await _with_token(viewed, "id-1", "a" * 64)
    await _view_has_token(viewed, "id-1", "a" * 64)
    await viewed.ctx.stores.backend.close()  # from here on, any storage read fails
    assert (await viewed.admit(session)).name == "id-1"


async def test_a_token_the_view_does_not_know_as_current_is_judged_by_the_storage(
    viewed: NodeRegistry,
) -> None:
    old = await _with_token(viewed, "id-1", "a" * 64)
    await _view_has_token(viewed, "id-1", "a" * 64)
    assert viewed.view is not None
    await viewed.view.stop()  # lagging from here on
    new = await _with_token(viewed, "id-1", "b" * 64)  # a renewal the view has not seen
    assert (await viewed.admit(new)).name == "id-1"
    forged = APISessionStore.for_token("c" * 64, "id-1", None, "node")
    with pytest.raises(AccessDenied, match="replaced"):
        await viewed.admit(forged)
    # The token the view still holds as current passes until the view catches up (its
    # watch's delay), as a renewed host certificate does on the SSH side.
    assert (await viewed.admit(old)).name == "id-1"


async def test_a_node_the_view_sees_locked_or_gone_is_refused(viewed: NodeRegistry) -> None:
    session = await _with_token(viewed, "id-1", "a" * 64)
    await viewed.ctx.stores.locks.create(Lock(metadata={"name": "l-1"},
                                              spec={"target": {"node": "web-1"}}))

    async def locked() -> bool:
        assert viewed.view is not None
        return viewed.view.refusal("id-1") is not None

    await _until(locked, "the lock")
    with pytest.raises(AccessDenied):
        await viewed.admit(session)
    stranger = APISessionStore.for_token("d" * 64, "id-9", None, "node")
    with pytest.raises(AccessDenied, match="id-9"):
        await viewed.admit(stranger)

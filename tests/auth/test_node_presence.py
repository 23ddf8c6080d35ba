"""Heartbeats and the presence record: a heartbeat that changes nothing does not rewrite
the record until it is PRESENCE_REFRESH old (each write is a storage transaction and a
watch event on every instance), yet listings show the latest heartbeat, a change of
address or connection is written at once, and a node that stops beating is listed for
at least the node TTL after its last heartbeat and drops out by TTL + PRESENCE_REFRESH."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from limen.auth.identity import Identity
from limen.auth.node_registry import PRESENCE_REFRESH, NodeRegistry
from limen.errors import AccessDenied, ConnectionProblem
from limen.resources import Lock, NodePresence

NODE = Identity(user="id-1", builtin="node")
MINUTE = timedelta(minutes=1)


async def _revision(registry: NodeRegistry) -> str:
    return (await registry.ctx.stores.node_presence.get("id-1")).metadata.revision


async def _viewed_revision(registry: NodeRegistry, revision: str) -> None:
    """Wait until the watch-fed view holds the record of ``revision``."""
    view = registry.view
    assert view is not None

    def seen() -> bool:
        record = view.presence_of("id-1")
        return record is not None and record.metadata.revision == revision

    async with asyncio.timeout(10):
        while not seen():
            await asyncio.sleep(0.01)


async def _listed(registry: NodeRegistry) -> dict[str, NodePresence]:
    return {node.name: presence for node, presence in await registry.present()}


@pytest.mark.parametrize("with_view", [True, False], ids=["view", "storage"])
async def test_unchanged_heartbeats_are_written_once_per_refresh_and_listed_each_time(
    viewed: NodeRegistry, with_view: bool,
) -> None:
    registry = viewed
    if not with_view:
        registry.view = None  # an auth service without the view reads the storage
    clock = registry.ctx.clock
    await registry.heartbeat(NODE, None, "tunnel")
    first = await _revision(registry)
    stored = await registry.ctx.stores.node_presence.get("id-1")
    assert stored.metadata.expires == clock.now() + registry.ctx.settings.node_ttl \
        + PRESENCE_REFRESH
    if with_view:
        await _viewed_revision(registry, first)

    for _ in range(4):  # one a minute, as nodes beat: nothing is written
        clock.advance(MINUTE)
        _, answered = await registry.heartbeat(NODE, None, "tunnel")
        assert answered.spec.last_heartbeat == clock.now()
        assert await _revision(registry) == first
        if with_view:  # the listing says when the node was last heard, all the same
            listed = await _listed(registry)
            assert listed["id-1"].spec.last_heartbeat == clock.now()

    clock.advance(MINUTE)  # now the record is PRESENCE_REFRESH old: written again
    await registry.heartbeat(NODE, None, "tunnel")
    rewritten = await registry.ctx.stores.node_presence.get("id-1")
    assert rewritten.metadata.revision != first
    assert rewritten.spec.last_heartbeat == clock.now()
    assert rewritten.metadata.expires == clock.now() + registry.ctx.settings.node_ttl \
        + PRESENCE_REFRESH


async def test_a_changed_connection_is_written_at_once(viewed: NodeRegistry) -> None:
    await viewed.heartbeat(NODE, None, "tunnel")
    first = await _revision(viewed)
    await _viewed_revision(viewed, first)
    viewed.ctx.clock.advance(MINUTE)
    await viewed.heartbeat(NODE, None, "direct")
    stored = await viewed.ctx.stores.node_presence.get("id-1")
    assert stored.metadata.revision != first and stored.spec.connection == "direct"
    assert stored.spec.since == viewed.ctx.clock.now()  # it moved: a new "since"


async def test_a_silent_node_is_listed_for_the_ttl_and_gone_by_ttl_plus_refresh(
    viewed: NodeRegistry,
) -> None:
    clock, ttl = viewed.ctx.clock, viewed.ctx.settings.node_ttl
    await viewed.heartbeat(NODE, None, "tunnel")
    await _viewed_revision(viewed, await _revision(viewed))
    clock.advance(PRESENCE_REFRESH - MINUTE)
    await viewed.heartbeat(NODE, None, "tunnel")  # the last one, not written

    clock.advance(ttl - timedelta(seconds=1))
    assert "id-1" in await _listed(viewed)  # never sooner than the TTL after the last beat
    clock.advance(PRESENCE_REFRESH - MINUTE + timedelta(seconds=2))
    assert "id-1" not in await _listed(viewed)


async def test_a_removed_or_locked_node_cannot_keep_its_presence(viewed: NodeRegistry) -> None:
    """Skipping the write never skips the checks: each heartbeat is judged first."""
    await viewed.heartbeat(NODE, None, "tunnel")
    stores = viewed.ctx.stores
    await stores.locks.create(Lock(metadata={"name": "l-1"}, spec={"target": {"node": "web-1"}}))
    with pytest.raises(AccessDenied):
        await viewed.heartbeat(NODE, None, "tunnel")
    await stores.locks.delete("l-1")
    await stores.nodes.delete("id-1")
    with pytest.raises(AccessDenied, match="not registered"):
        await viewed.heartbeat(NODE, None, "tunnel")


async def test_a_heartbeat_admitted_with_its_token_reads_nothing_again(
    viewed: NodeRegistry,
) -> None:
    """Through the API, admit() has just checked the node's registration, token and locks
    for this request; the heartbeat uses that instead of reading them again. Only the
    registration of the calling node itself stands in: any other is checked afresh."""
    stores = viewed.ctx.stores
    node = await stores.nodes.get("id-1")
    await viewed.heartbeat(NODE, None, "tunnel")
    await _viewed_revision(viewed, await _revision(viewed))
    other = Identity(user="id-2", builtin="node", admitted_node=node)
    with pytest.raises(AccessDenied, match="not registered"):
        await viewed.heartbeat(other, None, "tunnel")  # id-1's registration is not id-2's

    await stores.backend.close()  # from here on, any storage read or write fails
    admitted = Identity(user="id-1", builtin="node", admitted_node=node)
    _, answered = await viewed.heartbeat(admitted, None, "tunnel")
    assert answered.spec.connection == "tunnel"
    with pytest.raises(ConnectionProblem):
        await viewed.heartbeat(NODE, None, "tunnel")  # not admitted: it must read

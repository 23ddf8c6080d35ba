"""The in-memory view of the nodes answers the jump host's routing by id and by
name, and follows joins, renames and removals as the backend's watch reports them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest

from limen.auth.context import Stores
from limen.auth.node_watch import NodeWatch
from limen.backend import open_backend
from limen.clock import FakeClock
from limen.resources import Lock, Node, NodePresence


def _node(node_id: str, hostname: str) -> Node:
    return Node(metadata={"name": node_id}, spec={"hostname": hostname})


async def _until(check, what: str) -> None:  # noqa: ANN001 - tiny helper
    async with asyncio.timeout(10):
        while not check():
            await asyncio.sleep(0.01)


@pytest.fixture
async def watched() -> AsyncIterator[tuple[Stores, NodeWatch]]:
    backend = await open_backend("memory", sweep_interval=None)
    stores = Stores(backend)
    await stores.nodes.create(_node("id-1", "web-1"))
    watch = NodeWatch(stores, FakeClock())
    await watch.start()
    yield stores, watch
    await watch.stop()
    await backend.close()


async def test_matching_by_id_and_name_follows_the_backend(watched) -> None:
    stores, watch = watched
    assert [n.name for n in watch.matching("web-1")] == ["id-1"]
    assert [n.name for n in watch.matching("id-1")] == ["id-1"]
    assert watch.matching("web-2") == []

    await stores.nodes.create(_node("id-2", "web-2"))
    await _until(lambda: watch.matching("web-2"), "the join")

    async def rename(node: Node) -> None:
        node.spec.hostname = "db-1"

    await stores.nodes.modify("id-1", rename)
    await _until(lambda: watch.matching("db-1"), "the rename")
    assert watch.matching("web-1") == []  # the old name no longer leads anywhere

    await stores.nodes.delete("id-2")
    await _until(lambda: not watch.matching("web-2"), "the removal")
    assert watch.matching("id-2") == []


async def test_two_nodes_with_one_name_are_both_found(watched) -> None:
    """The router then says the name is ambiguous, as it did reading the backend."""
    stores, watch = watched
    await stores.nodes.create(_node("id-3", "web-1"))
    await _until(lambda: len(watch.matching("web-1")) == 2, "the second node")
    assert sorted(n.name for n in watch.matching("web-1")) == ["id-1", "id-3"]


async def test_the_nodes_of_a_kind_follow_the_backend(watched) -> None:
    """The OpenSSH health check's rounds read the agentless nodes from here."""
    stores, watch = watched
    assert watch.of_kind("openssh") == []
    agentless = Node(metadata={"name": "id-9"},
                     spec={"hostname": "old-1", "kind": "openssh", "addr": "127.0.0.1:22"})
    await stores.nodes.create(agentless)
    await _until(lambda: watch.of_kind("openssh"), "the agentless node")
    assert [n.name for n in watch.of_kind("openssh")] == ["id-9"]
    assert [n.name for n in watch.of_kind("")] == ["id-1"]  # the nodes with an agent
    await stores.nodes.delete("id-9")
    await _until(lambda: not watch.of_kind("openssh"), "its removal")


async def test_a_streams_end_is_called_once_at_its_nodes_removal_and_not_once_forgotten(
        watched) -> None:
    stores, watch = watched
    await stores.nodes.create(_node("id-4", "web-4"))
    await _until(lambda: watch.matching("id-4"), "the join")
    ended: list[str] = []
    watch.on_revoked("id-1", lambda: ended.append("id-1 stream"))
    forget = watch.on_revoked("id-4", lambda: ended.append("id-4 stream, closed already"))
    forget()
    await stores.nodes.delete("id-4")
    await stores.nodes.delete("id-1")
    await _until(lambda: not watch.matching("id-1"), "the removals")
    assert ended == ["id-1 stream"]


def _presence(node_id: str, expires: datetime) -> NodePresence:
    return NodePresence(metadata={"name": node_id, "expires": expires},
                        spec={"connection": "tunnel"})


async def test_the_present_nodes_follow_heartbeats_locks_expiry_and_removal(watched) -> None:
    """Listings come from here: a node is listed while registered, heartbeating (its
    presence not expired) and not locked, as reading the backend would say."""
    stores, watch = watched
    clock = watch.clock
    listed = lambda: [node.name for node, _ in watch.present()]  # noqa: E731
    assert listed() == []  # registered, never heartbeated
    await stores.node_presence.upsert(_presence("id-1", clock.now() + timedelta(minutes=1)))
    await stores.node_presence.upsert(_presence("id-gone", clock.now() + timedelta(minutes=1)))
    await _until(lambda: listed() == ["id-1"], "the heartbeat")  # and no unregistered id

    await stores.locks.create(Lock(metadata={"name": "l-1"},
                                   spec={"target": {"node": "web-1"}}))
    await _until(lambda: listed() == [], "the lock")
    await stores.locks.delete("l-1")
    await _until(lambda: listed() == ["id-1"], "the lock's removal")

    clock.advance(61)  # the heartbeats stopped: the presence lapses, even unswept
    assert listed() == []
    await stores.node_presence.upsert(_presence("id-1", clock.now() + timedelta(minutes=1)))
    await _until(lambda: listed() == ["id-1"], "the next heartbeat")
    await stores.nodes.delete("id-1")
    await _until(lambda: listed() == [], "the removal")

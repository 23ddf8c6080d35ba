"""A tunneled node's access feed inside its tunnel (limen.tunnel.feed): opened for the
node the connection logged in as, refused in the proxy's words, paced by the node, and
what a proxy could send wrong is an error, never a guess. The real proxy's feed and a
real node reading it: tests/integration/test_tunnel.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from limen.errors import AccessDenied, ConnectionProblem
from limen.tunnel import feed as feed_module
from limen.tunnel.feed import FeedSession, FeedUnavailable, TunnelFeed, feed_through
from tests.tunnel.kit import Kit, Node, wait_for


async def _connected(kit: Kit, name: str) -> Node:
    node = await kit.add_node(name)
    await node.agent.wait_connected(10)
    return node


def _feed(node: Node, **options: Any) -> AsyncIterator[dict[str, Any]]:
    assert node.agent.conn is not None
    return feed_through(node.agent.conn, **options)


async def test_the_feed_is_the_logged_in_nodes_and_arrives_line_by_line(kit: Kit) -> None:
    node = await _connected(kit, "fed")
    feed = _feed(node)
    assert await anext(feed) == {"op": "ready"}
    [(node_id, peer)] = kit.feeds
    assert node_id == node.node_id  # from its certificate: the request names no node
    assert peer.startswith("127.0.0.1:")
    lock = {"op": "put", "kind": "lock", "name": "l1", "resource": {"pad": "y" * 200_000}}
    line = json.dumps(lock).encode() + b"\n"
    kit.feed_lines.put_nowait(b'{"op": "ping"}\n')  # a quiet feed's ping is not a message
    kit.feed_lines.put_nowait(line[:100])  # a line in pieces, and longer than a packet
    kit.feed_lines.put_nowait(line[100:])
    assert await anext(feed) == lock
    await feed.aclose()
    assert await node.agent.heartbeat() is not None  # the tunnel stands after the feed


async def test_a_node_refused_since_it_logged_in_gets_no_feed(kit: Kit) -> None:
    node = await _connected(kit, "locked-feed")
    kit.revoked[node.node_id] = "node is locked: compromised"
    with pytest.raises(AccessDenied, match="node is locked: compromised"):
        await anext(_feed(node))
    assert kit.feeds == []
    refusals = [e for e in kit.recorder.named("auth") if e["success"] is False]
    assert [(e["server_id"], e["reason"]) for e in refusals] == [
        (node.node_id, "access feed refused: node is locked: compromised")]


async def test_a_second_feed_on_a_connection_replaces_the_first(kit: Kit) -> None:
    """One feed a connection, whatever a node asks: the proxy holds no more."""
    node = await _connected(kit, "twice")
    first, second = _feed(node), _feed(node)
    assert await anext(first) == {"op": "ready"}
    assert await anext(second) == {"op": "ready"}
    with pytest.raises(ConnectionProblem, match="feed in the tunnel ended"):
        await anext(first)
    kit.feed_lines.put_nowait(b'{"op": "delete", "kind": "lock", "name": "l1"}\n')
    assert (await anext(second))["op"] == "delete"
    assert len(kit.feeds) == 2


async def test_the_proxy_writes_no_faster_than_the_node_reads(kit: Kit) -> None:
    """A node that stops reading stops the proxy's feed (not a buffer that grows in the
    proxy); reading again resumes it."""
    kit.feed_flood = True
    node = await _connected(kit, "slow-reader")
    feed = _feed(node)
    assert await anext(feed) == {"op": "ready"}
    [hooks] = kit.tunnels.connections if kit.tunnels else []
    session = hooks._feed
    assert isinstance(session, FeedSession)
    await wait_for(lambda: not session._writable.is_set(), 10, "the feed to wait for the node")
    held = kit.flooded
    assert held < 64  # the node's window (2 MiB of 64 KiB lines) and a little more
    for _ in range(held + 5):  # all it held, and more: the proxy wrote again
        message = await anext(feed)
        assert message["op"] == "put" and len(message["pad"]) == 65536
    assert kit.flooded > held
    await feed.aclose()


@pytest.mark.parametrize(("sent", "why"), [
    (b"not json\n", "malformed line"),
    (b'["a list"]\n', "malformed line"),
    (b'{"error": {"kind": "access_denied", "message": "not yours"}}\n', "not yours"),
])
async def test_what_a_proxy_sends_wrong_ends_the_feed(kit: Kit, sent: bytes, why: str) -> None:
    node = await _connected(kit, "wrong")
    feed = _feed(node)
    await anext(feed)
    kit.feed_lines.put_nowait(sent)
    with pytest.raises((ConnectionProblem, AccessDenied), match=why):
        await anext(feed)


async def test_an_overlong_or_silent_feed_ends(kit: Kit, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    node = await _connected(kit, "overlong")
    monkeypatch.setattr(feed_module, "MAX_LINE", 1000)
    feed = _feed(node)
    await anext(feed)
    kit.feed_lines.put_nowait(b"x" * 5000)
    with pytest.raises(ConnectionProblem, match="overlong line"):
        await anext(feed)
    silent = _feed(node, read_timeout=0.2)
    await anext(silent)
    with pytest.raises(ConnectionProblem, match="fell silent"):
        await anext(silent)


async def test_a_tunnel_only_node_waits_for_a_tunnel_and_takes_any_that_is_up(kit: Kit
                                                                             ) -> None:
    down = await kit.add_node("not-yet", start=False)
    up = await _connected(kit, "up")
    https: list[str] = []

    async def over_https() -> AsyncIterator[dict[str, Any]]:
        https.append("opened")
        yield {"op": "ready"}

    assert await anext(TunnelFeed(lambda: [down.agent, up.agent], over_https)()) == {
        "op": "ready"}
    assert [node_id for node_id, _ in kit.feeds] == [up.node_id]
    # With no tunnel up the feed waits for one, rather than failing or going to HTTPS.
    waiting = asyncio.ensure_future(anext(TunnelFeed(lambda: [down.agent], over_https)()))
    down.agent.start()
    assert await asyncio.wait_for(waiting, 10) == {"op": "ready"}
    assert [node_id for node_id, _ in kit.feeds] == [up.node_id, down.node_id]
    assert https == []


async def test_a_proxy_that_takes_no_feed_in_its_tunnels_gets_the_https_feed() -> None:
    kit = Kit()
    kit.takes_feeds = False  # as a proxy of an earlier version
    await kit.start_proxy()
    try:
        node = await _connected(kit, "older-proxy")
        with pytest.raises(FeedUnavailable):
            await anext(_feed(node))

        async def over_https() -> AsyncIterator[dict[str, Any]]:
            yield {"op": "ready", "via": "https"}

        feed = TunnelFeed(lambda: [node.agent], over_https)()
        assert await anext(feed) == {"op": "ready", "via": "https"}
        assert await node.agent.heartbeat() is not None  # its heartbeats still go inside
    finally:
        await kit.close()


async def test_a_tunnel_that_closes_is_no_reason_to_turn_to_https(kit: Kit) -> None:
    """Only a proxy that refuses the subsystem sends the feed to HTTPS: a tunnel that
    went down is waited for again (the HTTPS feed would stay open for good)."""
    node = await _connected(kit, "closing")
    conn = node.agent.conn
    assert conn is not None
    conn.close()
    await conn.wait_closed()
    with pytest.raises(ConnectionProblem) as failed:
        await anext(feed_through(conn))
    assert not isinstance(failed.value, FeedUnavailable)

"""A tunneled node's heartbeat inside its tunnel (limen.tunnel.heartbeat): answered for
the node the connection logged in as, refused in the proxy's words, and nothing else an
SSH client could ask of a session gets through."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest

from limen.auth.server import AuthServer
from limen.errors import AccessDenied, ConnectionProblem
from limen.node.cluster.link import LocalLink
from limen.node.cluster.membership import Heartbeat, NodeIdentity
from limen.tunnel.heartbeat import beat_through
from tests.support.memory_auth import memory_auth_context
from tests.tunnel.kit import Kit


async def test_a_beat_is_answered_for_the_node_the_tunnel_logged_in_as(kit: Kit) -> None:
    node = await kit.add_node("beating")
    await node.agent.wait_connected(10)
    answer = await node.agent.heartbeat()
    assert answer == {"name": node.node_id, "tunnel_peers": []}
    [(node_id, peer)] = kit.beats
    assert node_id == node.node_id  # from its certificate: the request names no node
    assert peer.startswith("127.0.0.1:")
    assert await node.agent.heartbeat() == answer  # again, on the same connection
    assert len(kit.beats) == 2 and len(kit.tunnels.connections) == 1


async def test_a_slow_and_long_answer_arrives_whole(kit: Kit) -> None:
    """The agent sends its end of the channel at once; the answer, written later (a
    presence write first) and in many packets, still arrives whole."""
    node = await kit.add_node("slow")
    await node.agent.wait_connected(10)
    kit.beat_delay, kit.beat_extra = 0.3, {"pad": "x" * 300_000}
    answer = await node.agent.heartbeat()
    assert answer is not None and answer["pad"] == "x" * 300_000


async def test_a_proxy_that_does_not_answer_in_time_is_a_connection_problem(kit: Kit) -> None:
    """(The node then beats over HTTPS: see the Heartbeat tests below.)"""
    node = await kit.add_node("hung")
    await node.agent.wait_connected(10)
    kit.beat_delay = 5.0
    assert node.agent.conn is not None
    with pytest.raises(ConnectionProblem, match="heartbeat in the tunnel failed"):
        await beat_through(node.agent.conn, timeout=0.2)


async def test_a_node_refused_since_it_logged_in_gets_the_refusal(kit: Kit) -> None:
    node = await kit.add_node("locked")
    await node.agent.wait_connected(10)
    kit.revoked[node.node_id] = "node is locked: compromised"
    with pytest.raises(AccessDenied, match="node is locked: compromised"):
        await node.agent.heartbeat()
    assert kit.beats == []
    refusals = [e for e in kit.recorder.named("auth") if e["success"] is False]
    assert [(e["server_id"], e["reason"]) for e in refusals] == [
        (node.node_id, "heartbeat refused: node is locked: compromised")]


async def test_a_failure_of_the_proxys_own_is_a_sentence_and_the_tunnel_stands(
        kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
    node = await kit.add_node("failing")
    await node.agent.wait_connected(10)
    kit.beat_failure = RuntimeError("secret-detail")
    with pytest.raises(ConnectionProblem) as failed:
        await node.agent.heartbeat()
    assert failed.value.message == "the proxy could not take the heartbeat"
    assert "heartbeat of node" in caplog.text  # the proxy's log keeps the traceback
    kit.beat_failure = None
    assert await node.agent.heartbeat() is not None  # on the same tunnel
    assert kit.tunnels is not None and len(kit.tunnels.connections) == 1


async def test_the_tunnel_runs_no_shell_command_or_other_subsystem(kit: Kit) -> None:
    node = await kit.add_node("nothing-else")
    await node.agent.wait_connected(10)
    conn = node.agent.conn
    assert conn is not None
    look_alikes = ({"subsystem": "HEARTBEAT@limen"}, {"subsystem": "access-feed@limen "},
                   {"command": "heartbeat@limen"}, {"command": "access-feed@limen"})
    for ask in ({"command": "id"}, {"subsystem": "sftp"}, {}, *look_alikes):  # {}: a shell
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_process(**ask)
    with pytest.raises((asyncssh.ChannelOpenError, asyncssh.Error)):
        await conn.start_sftp_client()
    assert kit.beats == [] and kit.feeds == []
    assert await node.agent.heartbeat() is not None  # the connection still beats


async def test_without_a_tunnel_or_a_proxy_that_takes_beats_the_node_uses_https() -> None:
    kit = Kit()
    kit.takes_heartbeats = False  # as a proxy of an earlier version
    await kit.start_proxy()
    try:
        node = await kit.add_node("older-proxy")
        await node.agent.wait_connected(10)
        with pytest.raises(ConnectionProblem, match="no heartbeat in the tunnel"):
            await node.agent.heartbeat()
        await node.agent.stop()
        assert await node.agent.heartbeat() is None  # no tunnel: HTTPS
    finally:
        await kit.close()


@pytest.fixture
async def auth(tmp_path: Path) -> AsyncIterator[AuthServer]:
    """An auth service with node id-1 registered: what a node's HTTPS heartbeat reaches
    (through LocalLink, the facade the web API calls)."""
    async with memory_auth_context(tmp_path, "beat.test") as ctx:
        yield AuthServer(ctx)


def _heartbeat(auth: AuthServer) -> Heartbeat:
    identity = NodeIdentity(node_id="id-1", name="web-1", cluster="beat.test", host_cert="",
                            host_ca="", user_ca="")
    return Heartbeat(LocalLink(auth, "id-1"), identity, "", lambda: [])


@pytest.mark.parametrize(("tunnel", "over_https"), [
    ({"via": "tunnel"}, False),
    (None, True),  # the tunnel is down
    (ConnectionProblem("no heartbeat in the tunnel"), True),  # an older proxy
])
async def test_a_tunneled_node_beats_in_its_tunnel_when_it_can(
        auth: AuthServer, tunnel: object, over_https: bool) -> None:
    beat = _heartbeat(auth)
    heard: list[dict[str, str]] = []
    beat.on_answer = heard.append

    async def through_tunnel() -> object:
        if isinstance(tunnel, Exception):
            raise tunnel
        return tunnel

    beat.through_tunnel = through_tunnel  # type: ignore[assignment]
    await beat.beat()
    assert heard == [tunnel if not over_https else {}]
    # Only a beat over the link reached the auth service here (the tunnel's answer is
    # the proxy's; see the kit tests above and tests/integration/test_tunnel.py).
    assert (await auth.nodes.presence_of("id-1") is not None) is over_https


async def test_a_refusal_in_the_tunnel_is_not_retried_over_https(auth: AuthServer) -> None:
    beat = _heartbeat(auth)

    async def refused() -> dict[str, str]:
        raise AccessDenied("node is locked")

    beat.through_tunnel = refused
    with pytest.raises(AccessDenied):
        await beat.beat()
    assert await auth.nodes.presence_of("id-1") is None

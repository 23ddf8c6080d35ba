"""Data connections: a tunneled node dials back one plain connection per session.

The fast path, and what a stranger, a thief of a ticket or a node that does not dial
would try: through the real tunnel server, agent and node SSH service."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh
import pytest
import uvloop

from limen.tunnel.data_link import ANSWER_OK, DATA_PORT, new_ticket, preamble
from limen.tunnel.discovery import TunnelTarget
from tests.tunnel.kit import Kit, Node, bulk_both_ways, run_once, wait_for


async def _session(kit: Kit, name: str) -> str:
    return await run_once(kit, name, "echo hi")


async def _sent_from(source: str, port: int, data: bytes) -> bytes:
    """Connect from ``source`` to the tunnel port, send ``data``: what comes back
    before the proxy closes the connection."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    sock.bind((source, 0))
    await loop.sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(data)
    try:
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


def _refusals(kit: Kit) -> list[dict[str, Any]]:
    return [e for e in kit.recorder.named("auth") if e.get("kind") == "tunnel-data"]


async def test_sessions_come_on_connections_the_node_dials_back(kit: Kit) -> None:
    node = await kit.add_node("fast", data=True)
    await node.agent.wait_connected(10)
    tunnel = kit.tunnels.directory.get(node.node_id)
    assert tunnel is not None and tunnel.gate is kit.tunnels.gate
    await bulk_both_ways(kit, "fast", 8 * 1024 * 1024, 9_000_000)
    assert (await _session(kit, "fast")).strip() == "hi"
    assert (tunnel.data_connections, tunnel.channels_opened) == (2, 0)
    assert node.agent.dialer is not None and node.agent.dialer.dialed == 2
    assert kit.tunnels.gate.admitted == 2 and not _refusals(kit)


async def test_an_agent_that_offers_none_is_reached_through_its_tunnel(kit: Kit) -> None:
    node = await kit.add_node("plain")
    await node.agent.wait_connected(10)
    tunnel = kit.tunnels.directory.get(node.node_id)
    assert tunnel is not None and tunnel.gate is None
    assert (await _session(kit, "plain")).strip() == "hi"
    assert (tunnel.data_connections, tunnel.channels_opened) == (0, 1)


async def test_a_made_up_ticket_is_refused_and_audited(kit: Kit) -> None:
    node = await kit.add_node("guarded", data=True)
    await node.agent.wait_connected(10)
    assert await _sent_from("127.0.0.1", kit.tunnel_port, preamble(new_ticket())) == b""
    assert await _sent_from("127.0.0.1", kit.tunnel_port, b"LIMEN-DATA nonsense\n" * 4) == b""
    await wait_for(lambda: len(_refusals(kit)) == 2, 10, "two refusals")
    reasons = [e["reason"] for e in _refusals(kit)]
    assert "its ticket is unknown, used or expired" in reasons[0]
    assert "did not open with a data connection's ticket line" in reasons[1]
    assert all(e["success"] is False and e["method"] == "ticket" for e in _refusals(kit))
    assert kit.tunnels.gate.admitted == 0
    # The agents' SSH on the same port is untouched, and so are the node's sessions.
    assert (await _session(kit, "guarded")).strip() == "hi"


async def _offer_with(node: Node, handler: Callable[..., Awaitable[None]]) -> None:
    """The node's agent offers data connections, answered by ``handler``: the test
    playing a node, or whoever learned what the node learns."""
    conn = node.agent.conn
    assert conn is not None
    await conn.start_server(lambda _h, _p: handler, node.node_id, DATA_PORT)


async def test_a_ticket_admits_once_and_only_from_the_tunnels_address(kit: Kit) -> None:
    """Someone who learned a ticket, from another address, is refused without using it
    up; the node then comes with it and is admitted; a replay of it is refused."""
    node = await kit.add_node("stolen", data=False)
    await node.agent.wait_connected(10)
    heard: list[bytes] = []

    async def thief_then_node(reader: Any, writer: Any) -> None:
        line = await reader.readline()
        heard.append(line)
        ticket = line.strip().decode()
        assert await _sent_from("127.0.0.2", kit.tunnel_port, preamble(ticket)) == b""
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", kit.tunnel_port))
        await loop.sock_sendall(sock, preamble(ticket))
        writer.write(ANSWER_OK)
        writer.close()
        await node.server.serve_socket(sock)

    await _offer_with(node, thief_then_node)
    tunnel = kit.tunnels.directory.get(node.node_id)
    assert tunnel is not None
    assert (await _session(kit, "stolen")).strip() == "hi"
    assert (tunnel.data_connections, tunnel.channels_opened) == (1, 0)
    ticket = heard[0].strip().decode()
    assert await _sent_from("127.0.0.1", kit.tunnel_port, preamble(ticket)) == b""
    await wait_for(lambda: len(_refusals(kit)) == 2, 10, "two refusals")
    first, replay = (e["reason"] for e in _refusals(kit))
    assert f"issued to node {node.node_id}'s tunnel from 127.0.0.1, not to 127.0.0.2" in first
    assert "unknown, used or expired" in replay
    assert _refusals(kit)[0]["server_id"] == node.node_id


async def test_a_node_that_cannot_dial_back_is_reached_through_its_tunnel(
    kit: Kit,
) -> None:
    """The dial fails (nothing listens where the node dials): the node says so at once,
    the session goes through the tunnel, and later sessions do not ask again."""
    node = await kit.add_node("walled", data=True)
    await node.agent.wait_connected(10)
    dialer = node.agent.dialer
    assert dialer is not None
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dialer.target = TunnelTarget("127.0.0.1", closed.getsockname()[1], None)
    closed.close()
    tunnel = kit.tunnels.directory.get(node.node_id)
    assert tunnel is not None
    assert (await _session(kit, "walled")).strip() == "hi"
    assert (tunnel.data_connections, tunnel.channels_opened) == (0, 1)
    assert tunnel.data_paused_until > time.monotonic() + 60
    dialer.target = kit.target()  # it could dial now, but is not asked for a while
    assert (await _session(kit, "walled")).strip() == "hi"
    assert (tunnel.data_connections, tunnel.channels_opened) == (0, 2)
    assert dialer.dialed == 0


async def test_a_node_that_says_ok_and_never_dials_costs_one_wait(kit: Kit) -> None:
    """...and a ticket that comes after the wait is over admits nothing."""
    node = await kit.add_node("liar")
    await node.agent.wait_connected(10)
    tickets: list[str] = []

    async def say_ok(reader: Any, writer: Any) -> None:
        tickets.append((await reader.readline()).strip().decode())
        writer.write(ANSWER_OK)
        writer.close()

    await _offer_with(node, say_ok)
    tunnel = kit.tunnels.directory.get(node.node_id)
    assert tunnel is not None
    assert (await _session(kit, "liar")).strip() == "hi"
    assert (tunnel.data_connections, tunnel.channels_opened) == (0, 1)
    assert tunnel.data_paused_until > time.monotonic() + 60
    assert await _sent_from("127.0.0.1", kit.tunnel_port, preamble(tickets[0])) == b""
    await wait_for(lambda: _refusals(kit), 10, "the late ticket's refusal")
    assert "unknown, used or expired" in _refusals(kit)[0]["reason"]


async def test_a_node_cannot_offer_data_connections_for_another_node(kit: Kit) -> None:
    victim = await kit.add_node("victim-data")
    sneaky = await kit.add_node("sneaky-data")
    await victim.agent.wait_connected(10)
    await sneaky.agent.wait_connected(10)
    conn = sneaky.agent.conn
    assert conn is not None

    async def never(_reader: Any, _writer: Any) -> None:
        raise AssertionError("the proxy asked the wrong node")

    try:
        await conn.start_server(lambda _h, _p: never, victim.node_id, DATA_PORT)
    except asyncssh.ChannelListenError:
        pass
    else:
        raise AssertionError("the proxy took another node's data offer")
    victim_tunnel = kit.tunnels.directory.get(victim.node_id)
    assert victim_tunnel is not None and victim_tunnel.gate is None
    assert (await _session(kit, "victim-data")).strip() == "hi"


def test_both_kinds_share_the_tunnel_port_on_uvloop() -> None:
    """`limen start` runs on uvloop (limen.runtime.eventloop), whose transports are not
    asyncio's classes: the tunnel port still tells an agent from a data connection."""

    async def scenario() -> None:
        kit = Kit()
        await kit.start_proxy()
        try:
            node = await kit.add_node("uv", data=True)
            await node.agent.wait_connected(10)
            assert (await _session(kit, "uv")).strip() == "hi"
            tunnel = kit.tunnels.directory.get(node.node_id)
            assert tunnel is not None and tunnel.data_connections == 1
        finally:
            await kit.close()

    uvloop.run(scenario())


async def test_a_nodes_answer_writes_no_lines_of_its_own_into_the_proxys_log(
    kit: Kit, caplog: pytest.LogCaptureFixture,
) -> None:
    node = await kit.add_node("chatty")
    await node.agent.wait_connected(10)

    async def say_much(reader: Any, writer: Any) -> None:
        await reader.readline()
        writer.write(b"no: nope\x1b[2J\nERROR forged line\n")
        writer.close()

    await _offer_with(node, say_much)
    with caplog.at_level(logging.WARNING, logger="limen.tunnel.registry"):
        assert (await _session(kit, "chatty")).strip() == "hi"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "the node answered: no: nope?[2J" in logged
    assert "forged line" not in logged and "\x1b" not in logged

"""The tunnel server, the agent and the channel streams, on one event loop: sessions
through a tunnel, who may register as which node, reconnecting, dead networks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime

import asyncssh
import pytest

from limen.auth.ca import new_ca_files
from limen.errors import ConnectionProblem
from limen.tunnel.agent import ProxyLocator
from limen.tunnel.backoff import Backoff
from limen.tunnel.discovery import TunnelTarget
from limen.tunnel.registry import NODE_PORT
from tests.tunnel.kit import (
    CLUSTER,
    Kit,
    Relay,
    bulk_both_ways,
    host_cert,
    new_key,
    run,
    run_once,
    wait_for,
)


async def test_many_sessions_share_one_tunnel(kit: Kit) -> None:
    node = await kit.add_node("busy")
    await node.agent.wait_connected(10)
    tunnel = kit.tunnels.directory.get(node.node_id)

    outputs = await asyncio.gather(*(run_once(kit, "busy", f"echo session-{i}")
                                     for i in range(20)))
    assert sorted(o.strip() for o in outputs) == sorted(f"session-{i}" for i in range(20))
    assert kit.tunnels.directory.get(node.node_id) is tunnel  # the same connection
    assert tunnel.channels_opened == 20
    assert len(kit.tunnels.connections) == 1


async def test_bulk_data_and_half_close_through_the_tunnel(kit: Kit) -> None:
    node = await kit.add_node("bulk")
    await node.agent.wait_connected(10)
    await bulk_both_ways(kit, "bulk", 24 * 1024 * 1024, 20_000_000)


async def test_the_nodes_output_crosses_the_tunnel_in_gathered_packets(kit: Kit) -> None:
    """The node's SSH connection writes packets of 32 KiB at most (the client's limit),
    each in parts. The node gathers what is written in one turn of its loop, so a
    download crosses the tunnel in a fraction of the packets: each costs both ends the
    same work whatever its size."""
    node = await kit.add_node("gather")
    await node.agent.wait_connected(10)
    tunnel = kit.tunnels.directory.get(node.node_id)
    assert tunnel is not None
    conn = await kit.connect("gather")
    try:
        size = 16 * 1024 * 1024
        before = tunnel.conn._recv_seq  # asyncssh's count of packets received
        down = await conn.run(f"head -c {size} /dev/zero", encoding=None, check=True)
        packets = tunnel.conn._recv_seq - before
    finally:
        conn.close()
        await conn.wait_closed()
    assert down.stdout == bytes(size)
    # Without gathering: 2,068, as asyncssh writes each of its packets in parts. With
    # it: one per read of the command's output (64 KiB, node.ssh.channel.CHUNK), 262.
    one_per_client_packet = size // (32 * 1024)
    assert packets < one_per_client_packet * 0.6, f"{packets} tunnel packets for {size} bytes"


async def test_a_node_certificate_cannot_log_in_as_another_node(kit: Kit) -> None:
    victim = await kit.add_node("victim", start=False)
    # The agent of node A presents A's certificate but logs in as B's id.
    impostor = await kit.add_node("impostor", start=False)
    impostor.agent.identity = type(impostor.agent.identity)(
        victim.node_id, impostor.key, impostor.cert, kit.host_ca.convert_to_public(), CLUSTER)
    impostor.agent.start()
    await wait_for(lambda: impostor.agent.last_error, 10, "the refusal")
    assert "refused this node's host certificate" in impostor.agent.last_error
    assert kit.tunnels.directory.get(victim.node_id) is None
    await wait_for(lambda: kit.recorder.named("auth"), 10, "an auth event")
    refusal = kit.recorder.named("auth")[0]
    assert refusal["success"] is False and refusal["kind"] == "tunnel"
    assert f"may not open a tunnel as '{victim.node_id}'" in refusal["reason"]


async def test_a_node_may_offer_only_itself(kit: Kit) -> None:
    victim = await kit.add_node("victim2", start=False)
    # Logged in correctly as itself, it asks to be the forward for another node.
    sneaky = await kit.add_node("sneaky", offer_as=victim.node_id)
    await wait_for(lambda: sneaky.agent.last_error, 10, "the refusal")
    assert "would not take this node's tunnel" in sneaky.agent.last_error
    assert kit.tunnels.directory.get(victim.node_id) is None
    assert kit.tunnels.directory.get(sneaky.node_id) is None
    with pytest.raises(ConnectionProblem, match="offline"):
        await kit.router.open_stream(await kit.router.resolve("victim2"))
    reasons = [e["reason"] for e in kit.recorder.named("auth") if e["success"] is False]
    assert any(f"may offer only itself, not {victim.node_id}" in r for r in reasons)


async def test_stop_ends_the_agent_even_when_a_cancellation_is_lost(kit: Kit) -> None:
    """On Python 3.11, asyncio.wait_for (and a library built on it) can swallow a
    cancellation that arrives as the awaited call completes; the agent's loop must still
    end when stopped, not go on dialing while stop() waits for it."""
    node = await kit.add_node("stubborn", start=False)
    sessions = 0

    async def swallowing_session() -> float:
        nonlocal sessions
        sessions += 1
        with contextlib.suppress(asyncio.CancelledError):  # as the lost-cancel race does
            await asyncio.sleep(30)
        raise OSError("the dial failed")

    node.agent._session = swallowing_session  # type: ignore[method-assign]  # noqa: SLF001
    node.agent.start()
    await wait_for(lambda: sessions == 1, 5, "the first dial")
    async with asyncio.timeout(5):
        await node.agent.stop()
    assert sessions == 1


@pytest.mark.parametrize("what", ["user-cert", "other-ca", "proxy-role", "other-cluster",
                                  "expired", "plain-key"])
async def test_only_a_current_node_certificate_of_this_cluster_logs_in(
    kit: Kit, what: str
) -> None:
    key = new_key()
    node_id = "0b6a3c1e-0000-4000-8000-000000000001"
    ca = kit.host_ca
    if what == "other-ca":
        ca = new_key()
    role = "proxy" if what == "proxy-role" else "node"
    cluster = "elsewhere" if what == "other-cluster" else CLUSTER
    cert: asyncssh.SSHCertificate | None = host_cert(ca, key, node_id, [node_id], role, cluster)
    if what == "user-cert":
        cert = kit.user_ca.generate_user_certificate(key, node_id, principals=[node_id])
    if what == "expired":
        cert = kit.host_ca.generate_host_certificate(
            key, node_id, principals=[node_id], valid_after=time.time() - 7200,
            valid_before=time.time() - 3600)
    if what == "plain-key":
        cert = None
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect(
            "127.0.0.1", kit.tunnel_port, username=node_id,
            client_keys=[(key, cert) if cert is not None else key], known_hosts=None,
            agent_path=None, config=[], preferred_auth="publickey")
    await wait_for(lambda: kit.recorder.named("auth"), 10, "the refusal event")
    assert kit.recorder.named("auth")[0]["success"] is False


async def test_an_agent_connection_reaches_nothing_but_its_node(kit: Kit) -> None:
    node = await kit.add_node("plain")
    await node.agent.wait_connected(10)
    conn = node.agent.conn
    assert conn is not None
    with pytest.raises(asyncssh.ChannelOpenError):
        await conn.open_connection("127.0.0.1", kit.jump.port)  # no direct-tcpip
    with pytest.raises(asyncssh.ChannelOpenError):
        await conn.create_session(asyncssh.SSHClientSession)  # no shell at the proxy
    with pytest.raises(asyncssh.ChannelListenError):
        await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", 22)  # no real sockets


async def test_a_newer_tunnel_for_a_node_replaces_the_older(kit: Kit) -> None:
    # A reconnect after a silent network failure finds its old tunnel still listed:
    # the newer one must win at once, not after the old one's keepalives time out.
    node = await kit.add_node("twice", backoff=Backoff(first=60, cap=60))
    await node.agent.wait_connected(10)
    first = kit.tunnels.directory.get(node.node_id)
    second_agent = type(node.agent)(node.agent.identity, node.agent._locate, node.agent._serve)
    second_agent.start()
    try:
        await second_agent.wait_connected(10)
        assert kit.tunnels.directory.get(node.node_id) is not first
        await wait_for(lambda: not node.agent.connected, 10, "the older tunnel to close")
        conn = await kit.connect("twice")
        assert (await run(conn, "echo newest")).strip() == "newest"
        conn.close()
    finally:
        await second_agent.stop()


def test_backoff_is_jittered_exponential_and_capped() -> None:
    backoff = Backoff()
    delays = [backoff.next() for _ in range(12)]
    steps = [min(10.0, 0.5 * 2**i) for i in range(12)]
    assert all(step / 2 <= d <= step for d, step in zip(delays, steps, strict=True))
    assert max(delays) <= 10.0 and delays[-1] >= 5.0
    assert len({round(d, 6) for d in delays[-4:]}) > 1  # jitter: agents do not march
    backoff.reset()
    assert backoff.next() <= 0.5


async def test_the_agent_comes_back_after_a_proxy_restart(kit: Kit) -> None:
    # Realistic backoff: first retry after 0.25..0.5 s, doubling, never over 10 s.
    node = await kit.add_node("phoenix", backoff=Backoff())
    await node.agent.wait_connected(10)
    await kit.stop_proxy()
    await wait_for(lambda: not node.agent.connected, 10, "the agent to notice")
    with pytest.raises(ConnectionProblem, match="is offline"):
        await kit.router.open_stream(await kit.router.resolve("phoenix"))
    await asyncio.sleep(1.5)  # the proxy stays down a while: the backoff grows
    await kit.start_proxy()
    back = time.monotonic()
    await node.agent.wait_connected(15)
    assert time.monotonic() - back < 10
    assert node.agent.connects == 2
    conn = await kit.connect("phoenix")
    assert (await run(conn, "echo again")).strip() == "again"
    conn.close()


async def test_keepalives_notice_a_silently_dead_network(kit: Kit) -> None:
    relay = await Relay(kit.tunnel_port).start()
    try:
        node = await kit.add_node(
            "flaky", target=lambda: TunnelTarget("127.0.0.1", relay.port, None),
            keepalive_interval=0.2, keepalive_count_max=2)
        await node.agent.wait_connected(10)
        first = kit.tunnels.directory.get(node.node_id)
        relay.freeze()  # no FIN, no RST: bytes just stop
        await wait_for(lambda: node.agent.connects >= 2, 15, "the agent to reconnect")
        assert kit.tunnels.directory.get(node.node_id) is not first
        conn = await kit.connect("flaky")
        assert (await run(conn, "echo recovered")).strip() == "recovered"
        conn.close()
    finally:
        await relay.close()


async def test_a_dead_tunnel_is_a_quick_clear_error(kit: Kit) -> None:
    relay = await Relay(kit.tunnel_port).start()
    try:
        node = await kit.add_node("frozen", target=lambda: TunnelTarget("127.0.0.1", relay.port,
                                                                        None))
        await node.agent.wait_connected(10)
        tunnel = kit.tunnels.directory.get(node.node_id)
        relay.freeze()
        started = time.monotonic()
        with pytest.raises(ConnectionProblem, match="did not answer within 1 s"):
            await tunnel.open_stream("frozen", timeout=1)
        assert time.monotonic() - started < 3
    finally:
        await relay.close()


async def test_the_agent_talks_only_to_the_proxy_the_cluster_names(kit: Kit) -> None:
    wrong = new_key().convert_to_public()
    node = await kit.add_node("careful",
                              target=lambda: TunnelTarget("127.0.0.1", kit.tunnel_port, wrong))
    await wait_for(lambda: node.agent.last_error, 10, "the refusal")
    assert "host key differs" in node.agent.last_error
    assert not node.agent.connected
    assert kit.tunnels.directory.get(node.node_id) is None


async def test_stopping_the_agent_takes_the_node_offline(kit: Kit) -> None:
    node = await kit.add_node("leaving")
    await node.agent.wait_connected(10)
    await node.agent.stop()
    await wait_for(lambda: kit.tunnels.directory.get(node.node_id) is None, 10, "the tunnel")
    status = kit.tunnels.directory.status(node.node_id)
    assert status is not None and status.online is False
    with pytest.raises(ConnectionProblem, match="is offline"):
        await kit.router.open_stream(await kit.router.resolve("leaving"))
    assert NODE_PORT == 3022


async def test_the_node_takes_large_packets_from_the_proxy(kit: Kit) -> None:
    """The node accepts tunnel channels with an 8 MiB window and 128 KiB packets (not
    asyncssh's 2 MiB and 32 KiB): the proxy forwards a user's bytes in a quarter of the
    packets, each costing both ends the same Python work whatever its size."""
    node = await kit.add_node("wide")
    await node.agent.wait_connected(10)
    assert kit.router is not None
    reader, writer = await kit.router.open_stream(await kit.router.resolve("wide"))
    try:
        assert (await reader.readline()).startswith(b"SSH-2.0-")  # the node's banner
        chan = writer.transport._chan  # type: ignore[attr-defined]
        assert (chan._send_pktsize, chan._send_window) == (128 * 1024, 8 * 1024 * 1024)
    finally:
        writer.close()


async def test_a_reconnection_dials_the_last_answer_and_asks_again_when_it_is_wrong(
    kit: Kit,
) -> None:
    """After a tunnel was up, the agent reconnects to where the proxy last said, without
    asking (a proxy restart would otherwise take a TLS handshake and a request from every
    node at once). If the tunnel server there now has another host key, that is no
    refusal to shout about: the proxy may have a new key, so it is asked again."""
    ca_pem = new_ca_files(CLUSTER, datetime.now(UTC))["tls_ca.crt"].decode()
    locator = ProxyLocator("127.0.0.1:9", ca_pem)  # its web API does not answer
    locator.last = TunnelTarget("127.0.0.1", kit.tunnel_port,
                                new_key().convert_to_public())  # another proxy's key
    locator.served()
    node = await kit.add_node("remembering", locate=locator)
    await wait_for(lambda: "asking the proxy again" in node.agent.last_error, 10,
                   "the agent to distrust its memory")
    assert not node.agent.connected and "differs" not in node.agent.last_error

    locator.last = kit.target()  # where the proxy is, with its key: dialed unasked
    await node.agent.wait_connected(15)
    assert locator.reused
    await kit.stop_proxy()  # and after a restart, the same
    await wait_for(lambda: not node.agent.connected, 10, "the agent to notice")
    await kit.start_proxy()
    await node.agent.wait_connected(15)
    assert node.agent.connects == 2
    await node.agent.stop()

"""A node follows the cluster's proxies. Hundreds of nodes asking every minute or so,
each with a new TLS connection, kept an idle proxy busy with handshakes: the asks share
one kept-alive connection, seen here from the operating system's side, and while the
node's heartbeats' answers list the proxies, no ask is sent at all."""

from __future__ import annotations

import asyncio
import os
import subprocess

import httpx
import pytest

from limen.errors import LimenError
from limen.tunnel.agent import REUSE_TRIES, ProxyLocator
from limen.tunnel.peers import PeerTunnels
from tests.support.cluster import ClusterHarness
from tests.support.node_api import HandNode, new_token
from tests.support.ssh_access import unique


def _my_connections(port: int) -> set[str]:
    """This process's established TCP connections to ``port``, as local addresses."""
    listing = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( dport = :{port} )"],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout
    return {line.split()[2] for line in listing.splitlines() if f"pid={os.getpid()}," in line}


def test_the_asks_for_the_cluster_s_proxies_share_one_connection(
    cluster: ClusterHarness,
) -> None:
    port = int(cluster.web_addr.rsplit(":", 1)[1])
    ca = (cluster.data_dir / "ca" / "tls_ca.crt").read_text()
    before = _my_connections(port)

    async def ask_three_times() -> list[set[str]]:
        peers = PeerTunnels(ProxyLocator(cluster.web_addr, ca), None)
        seen = []
        try:
            for _ in range(3):
                await peers.refresh()
                assert peers.web_addrs  # the ping was read: the proxies are listed
                seen.append(_my_connections(port) - before)
        finally:
            await peers.stop()
        seen.append(_my_connections(port) - before)
        return seen

    first, second, third, after = asyncio.run(ask_three_times())
    assert len(first) == 1, first  # kept open after the ask
    assert second == first and third == first  # and asked through again
    assert after == set()  # stopping closes it


def _answer(web_addr: str) -> dict:
    """A heartbeat's answer as far as the proxies go (its node fields left out)."""
    return {"tunnel_host_key": "", "tunnel_peers": [{"web_addr": web_addr}]}


def test_a_heard_heartbeat_answer_stands_in_for_the_ask_until_it_is_old(
    cluster: ClusterHarness,
) -> None:
    ca = (cluster.data_dir / "ca" / "tls_ca.crt").read_text()
    now = [1000.0]

    async def look() -> None:
        # The proxy it would ask does not answer: anything learned came from the answer.
        peers = PeerTunnels(ProxyLocator("127.0.0.1:9", ca), None, heard_seconds=90,
                            monotonic=lambda: now[0])
        try:
            with pytest.raises(LimenError):
                await peers.update()  # nothing heard yet: it asks
            peers.hear(_answer("10.0.0.7:3080"))
            now[0] += 89
            await peers.update()
            assert peers.web_addrs == ["10.0.0.7:3080"]
            now[0] += 2  # older than a heartbeat and a half: ask again
            with pytest.raises(LimenError):
                await peers.update()
        finally:
            await peers.stop()

    asyncio.run(look())


def test_a_heard_change_in_the_proxies_is_followed_at_once(cluster: ClusterHarness) -> None:
    ca = (cluster.data_dir / "ca" / "tls_ca.crt").read_text()

    async def follow() -> list[str]:
        peers = PeerTunnels(ProxyLocator("127.0.0.1:9", ca), None, refresh_seconds=3600,
                            heard_seconds=90)
        peers.start()  # its first ask fails; the next is an hour away
        try:
            await asyncio.sleep(0)
            peers.hear(_answer("10.0.0.8:3080"))
            async with asyncio.timeout(20):
                while not peers.web_addrs:
                    await asyncio.sleep(0.05)
            return peers.web_addrs
        finally:
            await peers.stop()

    assert asyncio.run(follow()) == ["10.0.0.8:3080"]


def test_the_heartbeat_answer_lists_the_cluster_s_proxies(cluster: ClusterHarness) -> None:
    node = HandNode(cluster, unique("beat"))
    node.join(new_token(cluster))
    answer = node.heartbeat("", "tunnel")
    assert answer.status_code == 200, answer.text
    ping = httpx.get(f"https://{cluster.web_addr}/v1/ping", verify=False, timeout=10).json()
    assert answer.json()["tunnel_peers"] == ping["tunnel_peers"]
    assert answer.json()["tunnel_host_key"] == ping["tunnel_host_key"]
    assert answer.json()["id"] == node.node_id  # and the node, as before


def test_the_locator_gives_a_served_answer_again_without_asking_for_some_tries(
    cluster: ClusterHarness,
) -> None:
    port = int(cluster.web_addr.rsplit(":", 1)[1])
    ca = (cluster.data_dir / "ca" / "tls_ca.crt").read_text()
    before = _my_connections(port)

    async def locate(times: int) -> list[tuple[bool, int]]:
        locator = ProxyLocator(cluster.web_addr, ca)
        seen = []
        try:
            for call in range(times):
                if call == 1:
                    locator.served()  # the tunnel it led to came up
                target = await locator()
                assert target == locator.last and target.host_key is not None
                seen.append((locator.reused, len(_my_connections(port) - before)))
                await locator.aclose()  # so that an ask shows as a new connection
        finally:
            await locator.aclose()
        return seen

    asked, *remembered, asked_again = asyncio.run(locate(REUSE_TRIES + 2))
    assert asked == (False, 1)
    assert remembered == [(True, 0)] * REUSE_TRIES  # no connection: the proxy was not asked
    assert asked_again == (False, 1)

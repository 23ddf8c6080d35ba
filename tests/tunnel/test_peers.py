"""A node asks its proxy for the cluster's proxies every minute or so; hundreds of nodes
doing that each with a new TLS connection kept an idle proxy busy with handshakes. The
asks share one kept-alive connection, seen here from the operating system's side."""

from __future__ import annotations

import asyncio
import os
import subprocess

from limen.tunnel.agent import ProxyLocator
from limen.tunnel.peers import PeerTunnels
from tests.support.cluster import ClusterHarness


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

"""Where a node's access cache reads its feed: inside one of its tunnels only when the
node takes sessions through tunnels alone (limen.tunnel.feed); a node that also listens,
or that the proxies dial, keeps its HTTPS feed, since sessions can reach it while no
tunnel is up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from limen.clock import RealClock
from limen.config import JoinOptions, NodeConfig
from limen.node.cluster.role import NodeRole
from limen.tunnel.feed import TunnelFeed


class _Link:
    async def access_feed(self) -> AsyncIterator[dict[str, Any]]:
        yield {"op": "ready"}


@pytest.mark.parametrize(("config", "inside_a_tunnel"), [
    ({}, True),  # joined with no address to advertise: reached only through tunnels
    ({"listen_addr": "127.0.0.1:3022"}, False),  # tunneled, and listening as asked
    ({"advertise_addr": "10.0.0.5"}, False),  # the proxies dial it
])
def test_only_a_tunnel_only_node_reads_its_feed_inside_a_tunnel(
        tmp_path: Path, config: dict[str, str], inside_a_tunnel: bool) -> None:
    role = NodeRole(NodeConfig(**config), tmp_path, RealClock(), None, JoinOptions())
    link = _Link()
    role.link = link  # type: ignore[assignment]
    feed = role._access_feed(role.tunneled)
    assert isinstance(feed, TunnelFeed) is inside_a_tunnel
    if not inside_a_tunnel:
        assert feed == link.access_feed

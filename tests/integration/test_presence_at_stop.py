"""A presence refresh still gathering when `limen start` stops is written before the
storage closes (auth/presence_writes.py waits up to a second for others to join it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from limen.auth.identity import Identity
from limen.auth.node_registry import PRESENCE_REFRESH
from tests.support.cluster import ClusterHarness
from tests.support.node_api import HandNode, new_token
from tests.support.ssh_access import unique


def test_a_refresh_still_waiting_is_written_when_the_service_stops(tmp_path: Path) -> None:
    first = ClusterHarness(tmp_path).start()
    refreshing: list[asyncio.Task[object]] = []
    try:
        node = HandNode(first, unique("stopping"))
        node_id = node.join(new_token(first))
        assert node.heartbeat("", "tunnel").status_code == 200  # news: written at once
        stores = first.service.auth.ctx.stores
        written = first.run(stores.node_presence.get(node_id)).spec.last_heartbeat
        assert written is not None
        first.clock.advance(PRESENCE_REFRESH)  # the next beat is a refresh: it waits
        nodes = first.service.auth.nodes

        async def refresh_left_waiting() -> None:
            nodes.presence_writes.linger = 3600  # nothing but the stop writes it
            beat = nodes.heartbeat(Identity(user=node_id, builtin="node"), None, "tunnel")
            refreshing.append(asyncio.create_task(beat))
            async with asyncio.timeout(10):
                while not nodes.presence_writes.waiting:
                    await asyncio.sleep(0.01)

        first.run(refresh_left_waiting())
    finally:
        first.stop()

    again = ClusterHarness(tmp_path).start()  # the same data dir
    try:
        stored = again.run(again.service.auth.ctx.stores.node_presence.get(node_id))
        assert stored.spec.last_heartbeat is not None
        assert stored.spec.last_heartbeat >= written + PRESENCE_REFRESH
    finally:
        again.stop()

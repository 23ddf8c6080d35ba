"""Joins past what the proxy works on at once: answered 503 with Retry-After at once
(not queued past the node's timeout), nothing of the token spent, and a real
`limen start --roles node` comes back when told and joins."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from limen.proxy.join_gate import JoinGate
from tests.support.cluster import ClusterHarness
from tests.support.node_api import HandNode, new_token
from tests.support.ssh_access import unique, wait_until
from tests.support.tunnel import DIRECT, NodeProcess

_holding: set[asyncio.Task[None]] = set()  # the holders, kept until they end


async def _hold_every_slot(gate: JoinGate) -> asyncio.Event:
    """Take every join slot, as that many joins in progress would; set the returned
    event to give them back."""
    release, held = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with contextlib.AsyncExitStack() as turns:
            for _ in range(gate.limit):
                await turns.enter_async_context(gate.turn())
            held.set()
            await release.wait()

    task = asyncio.get_running_loop().create_task(hold())
    _holding.add(task)
    task.add_done_callback(_holding.discard)
    await held.wait()
    return release


async def _set(event: asyncio.Event) -> None:
    event.set()


@contextlib.contextmanager
def _proxy_full(cluster: ClusterHarness) -> Iterator[JoinGate]:
    gate = cluster.service._web_state.joins  # noqa: SLF001 - the running proxy's own gate
    wait, gate.wait = gate.wait, 0.2  # turned away after 0.2 s rather than 5
    release = cluster.run(_hold_every_slot(gate))
    try:
        yield gate
    finally:
        cluster.run(_set(release))
        gate.wait = wait


def test_a_join_past_capacity_is_told_when_to_return_and_spends_nothing(
        cluster: ClusterHarness) -> None:
    token = new_token(cluster)  # single use
    node = HandNode(cluster, unique("busy"))
    with _proxy_full(cluster):
        refused = node.try_join(token)
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        error = refused.json()["error"]
        assert error["kind"] == "busy" and "admitting other nodes" in error["message"]
        assert not [n for n in cluster.run(cluster.service.auth.ctx.stores.nodes.list())
                    if n.spec.hostname == node.name]
    assert node.try_join(token).status_code == 200  # its one use was still there


@pytest.mark.timeout(90)
def test_a_node_told_to_come_back_joins_when_the_proxy_has_room(
        cluster: ClusterHarness, tmp_path: Path) -> None:
    node = NodeProcess(cluster, tmp_path, unique("patient"), extra=DIRECT)
    try:
        with _proxy_full(cluster):
            node.start()
            wait_until(lambda: "admitting other nodes" in node.log.read_text(), 30,
                       "the node to be told to come back")
            node.check_alive()  # waiting, not failed
        node.wait_registered()
    finally:
        node.stop()

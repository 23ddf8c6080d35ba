"""Is each OpenSSH node there, and still the node it was registered as?

Every ``INTERVAL`` seconds (and at once after each session's dial) the proxy makes an
SSH handshake with each OpenSSH node's address, judges the host certificate it presents
as ``upstream`` does, and writes what it saw in the node's presence: ``ok``, or the
sentence that says why not. ``limen ls`` shows it (``openssh (offline)`` unless ok).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from limen.errors import LimenError, NotFound
from limen.hostport import split_host_port
from limen.proxy.openssh.upstream import probe_sshd
from limen.proxy.ssh_routes import NodeRoute
from limen.resources import Node
from limen.tasks import cancel_and_wait

if TYPE_CHECKING:
    from limen.proxy.openssh.front import OpenSSHGateway

log = logging.getLogger(__name__)

INTERVAL = 30.0


async def check_node(gateway: OpenSSHGateway, node: Node) -> str:
    """"ok", or why the node's sshd is not (reachable as) that node."""
    host, port = split_host_port(node.spec.addr)
    route = NodeRoute(node.name, node.spec.hostname, host, port, kind="openssh")
    try:
        await probe_sshd(route, node, gateway.guard, gateway.host_cas, gateway.link.cluster,
                         gateway.clock)
    except LimenError as exc:
        return exc.message
    return "ok"


class OpenSSHHealth:
    def __init__(self, gateway: OpenSSHGateway, interval: float = INTERVAL) -> None:
        self.gateway = gateway
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(),
                                                            name="limen-openssh-health")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def check_all(self) -> None:
        for node in await self.gateway.link.openssh_nodes():
            state = await check_node(self.gateway, node)
            with contextlib.suppress(NotFound):
                await self.gateway.link.set_state(node.name, state)

    async def _loop(self) -> None:
        while True:
            try:
                await self.check_all()
            except Exception:  # keep checking; say what went wrong
                log.exception("checking OpenSSH nodes failed")
            await asyncio.sleep(self.interval)

"""The jump host's view of the cluster: find nodes, decide access, write audit events."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from limen.audit import schema
from limen.auth.server import AuthServer
from limen.config import split_host_port
from limen.errors import AccessDenied, BadParameter, ConnectionProblem, NotFound
from limen.proxy.ssh_jump import JumpIdentity, NodeRoute, open_tcp_stream
from limen.tunnel.registry import Tunnel, TunnelDirectory

log = logging.getLogger(__name__)


class BackendRouter:
    """Nodes as registered in the backend (they expire when heartbeats stop).

    A node with a reverse tunnel to this proxy is reached through it; otherwise the
    node's address is dialed (giving up after NODE_DIAL_TIMEOUT). A tunnel-only node
    is never dialed, even if an old address lingers: it has no port anyone can reach.
    """

    def __init__(self, auth: AuthServer, tunnels: TunnelDirectory | None = None) -> None:
        self.auth = auth
        self.tunnels = tunnels

    async def resolve(self, target: str) -> NodeRoute:
        nodes = await self.auth.ctx.stores.nodes.list()
        matches = [n for n in nodes if target in (n.name, n.spec.hostname)]
        if not matches:
            raise NotFound(f"node '{target}' is not known (limen ls lists the nodes you can reach)")
        if len(matches) > 1:
            ids = ", ".join(n.name for n in matches)
            raise BadParameter(f"{len(matches)} nodes are named '{target}'; use an id: {ids}")
        node = matches[0]
        name = node.spec.hostname
        if self._tunnel(node.name) is not None:
            return NodeRoute(node_id=node.name, name=name, host="", port=0)
        if node.spec.connection == "tunnel" or not node.spec.addr:
            raise ConnectionProblem(offline_message(name))
        host, port = split_host_port(node.spec.addr)
        return NodeRoute(node_id=node.name, name=name, host=host, port=port)

    async def open_stream(
        self, route: NodeRoute
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        tunnel = self._tunnel(route.node_id)
        if tunnel is not None:
            return await tunnel.open_stream(route.name)
        if not route.host:  # the tunnel went down since resolve()
            raise ConnectionProblem(offline_message(route.name))
        return await open_tcp_stream(route)

    def _tunnel(self, node_id: str) -> Tunnel | None:
        return self.tunnels.get(node_id) if self.tunnels is not None else None


def offline_message(name: str) -> str:
    return (
        f"node '{name}' is offline: it connects through a reverse tunnel, and its tunnel "
        "to the proxy is down (is its limen service running, and can it reach the proxy?)"
    )


class RolePolicy:
    """Before dialing: the user exists and a current role reaches the node's labels."""

    def __init__(self, auth: AuthServer) -> None:
        self.auth = auth

    async def check_node_access(self, identity: JumpIdentity, route: NodeRoute) -> None:
        try:
            user = await self.auth.ctx.stores.users.get(identity.user)
        except NotFound:
            raise AccessDenied(f"user {identity.user} no longer exists") from None
        node = await self.auth.ctx.stores.nodes.get(route.node_id)
        await self.auth.locks.check(user.name, list(user.spec.roles),
                                    node_names=(node.name, node.spec.hostname))
        checker = await self.auth.checker_for_user(user)
        if not checker.can_access_node(node.metadata.labels):
            raise AccessDenied(f"your roles do not allow access to node {route.name}")

    async def connection_deadline(self, identity: JumpIdentity) -> datetime | None:
        """The certificate's expiry when a role says disconnect_expired_cert."""
        try:
            user = await self.auth.ctx.stores.users.get(identity.user)
        except NotFound:
            return identity.valid_before
        checker = await self.auth.checker_for_user(user)
        return identity.valid_before if checker.disconnect_expired_cert() else None


class AuditObserver:
    """Writes what the jump host and the tunnel server report, checked at the boundary:
    a name the proxy does not report or a field the event's schema does not know is
    refused (logged, and an ``audit.report.refused`` event), never silently stored."""

    def __init__(self, auth: AuthServer) -> None:
        self.auth = auth

    async def on_event(self, name: str, fields: dict[str, Any]) -> None:
        try:
            event = schema.proxy_report(name, fields)
        except BadParameter as exc:
            log.error("refused a %s event from the proxy: %s", name, exc.message)
            await self.auth.ctx.audit.emit(
                schema.ReportRefused(reporter="proxy", reported=name[:64], error=exc.message)
            )
            return
        await self.auth.ctx.audit.emit(event)

"""The jump host's view of the cluster: find nodes, decide access, write audit events."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from limen.audit import schema
from limen.auth.node_registry import GONE
from limen.auth.node_watch import NodeWatch
from limen.auth.server import AuthServer
from limen.config import split_host_port
from limen.errors import AccessDenied, BadParameter, ConnectionProblem, NotFound
from limen.proxy.node_verify import AddressGuard, NodeVerifier
from limen.proxy.ssh_jump import JumpIdentity, NodeRoute, open_tcp_stream
from limen.resources import Node
from limen.sshauth import CertFacts
from limen.sshauth.judge import Revoked
from limen.tunnel.registry import Tunnel, TunnelDirectory

log = logging.getLogger(__name__)


class BackendRouter:
    """Nodes as registered in the backend, at the address their heartbeats report.

    A node with a reverse tunnel to this proxy is reached through it (the tunnel server
    checked its host certificate when the agent logged in). Otherwise the node's address
    is dialed, but only after the address proved it serves that node (node_verify): a
    node's word alone sends nobody anywhere. A tunnel-only node is never dialed, even if
    an old address lingers: it has no port anyone can reach. The node running in this
    very process (``trust_local``) is dialed at the address its service really listens
    on, which this process knows first-hand.
    """

    def __init__(self, auth: AuthServer, tunnels: TunnelDirectory | None,
                 verifier: NodeVerifier, guard: AddressGuard,
                 known: NodeWatch | None = None) -> None:
        self.auth = auth
        self.tunnels = tunnels
        self.verifier = verifier
        self.guard = guard
        self.known = known  # the nodes in memory; the backend is asked when it has none
        self._local: dict[str, tuple[str, int]] = {}

    def trust_local(self, node_id: str, host: str, port: int) -> None:
        """The node inside this process listens at host:port: no check needed there."""
        self._local[node_id] = (host, port)

    async def resolve(self, target: str) -> NodeRoute:
        matches = await self._known_matches(target)
        if not matches:  # not in memory (or joined since the watch last heard): ask
            nodes = await self.auth.ctx.stores.nodes.list()
            matches = [n for n in nodes if target in (n.name, n.spec.hostname)]
        if not matches:
            raise NotFound(f"node '{target}' is not known (limen ls lists the nodes you can reach)")
        if len(matches) > 1:
            ids = ", ".join(n.name for n in matches)
            raise BadParameter(f"{len(matches)} nodes are named '{target}'; use an id: {ids}")
        node = matches[0]
        name = node.spec.hostname
        if node.spec.kind == "openssh":  # the admin registered its address; the proxy
            host, port = split_host_port(node.spec.addr)  # checks it when it dials
            return NodeRoute(node_id=node.name, name=name, host=host, port=port, kind="openssh")
        if self._tunnel(node.name) is not None:
            return NodeRoute(node_id=node.name, name=name, host="", port=0)
        if node.name in self._local:
            return NodeRoute(node.name, name, *self._local[node.name])
        presence = await self.auth.nodes.presence_of(node.name)
        if presence is None:
            raise ConnectionProblem(
                f"node '{name}' is offline: it has not sent a heartbeat for "
                f"{_minutes(self.auth.ctx.settings.node_ttl)} (is its limen service running?)"
            )
        if presence.spec.connection == "tunnel" or not presence.spec.addr:
            # Offline, which open_stream says: after the policy, so that a user who may
            # not reach the node (or a locked node) is told that instead.
            return NodeRoute(node_id=node.name, name=name, host="", port=0)
        host, port = split_host_port(presence.spec.addr)
        return NodeRoute(node_id=node.name, name=name, host=host, port=port)

    async def _known_matches(self, target: str) -> list[Node]:
        """The nodes the watch has in memory for ``target``, each read again from the
        backend by id (one row, not every node): one removed or renamed since the watch
        last heard does not count."""
        if self.known is None:
            return []
        fresh = []
        for node in self.known.matching(target):
            try:
                current = await self.auth.ctx.stores.nodes.get(node.name)
            except NotFound:
                continue
            if target in (current.name, current.spec.hostname):
                fresh.append(current)
        return fresh

    async def open_stream(
        self, route: NodeRoute
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        tunnel = self._tunnel(route.node_id)
        if tunnel is not None:
            return await tunnel.open_stream(route.name)
        if not route.host:  # the tunnel went down since resolve()
            raise ConnectionProblem(offline_message(route.name))
        if self._local.get(route.node_id) == (route.host, route.port):
            return await open_tcp_stream(route)
        proven = await self.guard.dialable(route)
        if not self.verifier.proven(proven):
            await self.verifier.verify(proven, await self._revocation(route))
        return await open_tcp_stream(proven)

    async def _revocation(self, route: NodeRoute) -> Revoked:
        """Refuse certificates of a node removed since resolve(), or replaced by renewal."""
        try:
            node = await self.auth.ctx.stores.nodes.get(route.node_id)
        except NotFound:
            raise AccessDenied(GONE.format(node=route.name)) from None
        serial = node.spec.cert_serial

        def revoked(cert: CertFacts) -> str | None:
            if serial and cert.serial != serial:
                return f"its host certificate (serial {cert.serial}) is not the current one"
            return None

        return revoked

    def _tunnel(self, node_id: str) -> Tunnel | None:
        return self.tunnels.get(node_id) if self.tunnels is not None else None


def _minutes(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes} minutes" if minutes != 1 else "a minute"


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

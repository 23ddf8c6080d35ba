"""A small cluster for tunnel tests, on the test's own event loop: CAs, a tunnel server,
a jump host routing through it, and node agents serving real NodeServers.

Certificates come from limen.auth.ca (with the role@limen extensions the auth
service puts in), so the tunnel server judges what it would judge in a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncssh

from limen.auth.ca import sign_host_cert, sign_user_cert
from limen.client.ssh import connect_via_proxy
from limen.errors import ConnectionProblem, NotFound
from limen.node import CertPolicy, NodeServer, NodeSettings
from limen.proxy.ssh_jump import JumpHost, JumpSettings, NodeRoute, open_tcp_stream
from limen.tunnel.agent import AgentIdentity, TunnelAgent
from limen.tunnel.backoff import Backoff
from limen.tunnel.discovery import TunnelTarget
from limen.tunnel.registry import NODE_PORT
from limen.tunnel.server import TunnelServer, TunnelSettings

CLUSTER = "tunnel.test"


def new_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


def host_cert(ca: asyncssh.SSHKey, key: asyncssh.SSHKey, key_id: str, principals: list[str],
              role: str = "node", cluster: str = CLUSTER,
              valid_before: datetime | None = None) -> asyncssh.SSHCertificate:
    now = datetime.now(UTC)
    return sign_host_cert(
        ca, key.convert_to_public(), key_id=key_id, principals=principals,
        valid_after=now - timedelta(minutes=1),
        valid_before=valid_before or now + timedelta(hours=1),
        extensions={"role@limen": role, "cluster@limen": cluster},
    )


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def on_event(self, name: str, fields: dict[str, Any]) -> None:
        self.events.append((name, fields))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [f for n, f in self.events if n == name]


@dataclass
class TunnelRouter:
    """Nodes by name: through the tunnel directory, or dialed when they have an address."""

    server: TunnelServer
    addresses: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # name -> id, h, p
    ids: dict[str, str] = field(default_factory=dict)  # name -> id of tunneled nodes

    async def resolve(self, target: str) -> NodeRoute:
        if target in self.addresses:
            node_id, host, port = self.addresses[target]
            return NodeRoute(node_id, target, host, port)
        if target in self.ids:
            return NodeRoute(self.ids[target], target, "", 0)
        raise NotFound(f"node '{target}' is not known")

    async def open_stream(self, route: NodeRoute) -> Any:
        tunnel = self.server.directory.get(route.node_id)
        if tunnel is not None:
            return await tunnel.open_stream(route.name)
        if route.host:
            return await open_tcp_stream(route)
        raise ConnectionProblem(f"node '{route.name}' is offline")


@dataclass
class Node:
    name: str
    node_id: str
    server: NodeServer
    agent: TunnelAgent
    key: asyncssh.SSHKey
    cert: asyncssh.SSHCertificate


class Kit:
    def __init__(self) -> None:
        self.user_ca = new_key()
        self.host_ca = new_key()
        self.proxy_key = new_key()
        self.proxy_cert = host_cert(self.host_ca, self.proxy_key, "proxy",
                                    ["proxy", "127.0.0.1", "localhost"], role="proxy")
        self.recorder = Recorder()
        self.tunnel_port = 0
        self.tunnels: TunnelServer | None = None
        self.router: TunnelRouter | None = None
        self.jump: JumpHost | None = None
        self.nodes: list[Node] = []

    # the proxy

    async def start_proxy(self, port: int = 0) -> None:
        settings = TunnelSettings("127.0.0.1", port or self.tunnel_port, self.proxy_key,
                                  [self.proxy_cert], [self.host_ca.convert_to_public()],
                                  CLUSTER)
        self.tunnels = TunnelServer(settings, self.recorder)
        await self.tunnels.start()
        self.tunnel_port = self.tunnels.port
        if self.router is None:
            self.router = TunnelRouter(self.tunnels)
        self.router.server = self.tunnels
        if self.jump is None:
            jump = JumpSettings("127.0.0.1", 0, self.proxy_key, [self.proxy_cert],
                                [self.user_ca.convert_to_public()], CLUSTER)
            self.jump = JumpHost(jump, self.router)
            await self.jump.start()

    async def stop_proxy(self) -> None:
        if self.tunnels is not None:
            await self.tunnels.stop()

    def target(self) -> TunnelTarget:
        return TunnelTarget("127.0.0.1", self.tunnel_port, self.proxy_key.convert_to_public())

    # nodes

    async def add_node(self, name: str, *, cert_for: str | None = None,
                       offer_as: str | None = None, start: bool = True,
                       backoff: Backoff | None = None) -> Node:
        node_id = str(uuid.uuid4())
        key = new_key()
        cert = host_cert(self.host_ca, key, cert_for or node_id,
                         [cert_for or node_id, name, f"{name}.{CLUSTER}"])
        settings = NodeSettings(host_key=key, host_certs=[cert],
                                user_ca_keys=[self.user_ca.convert_to_public()],
                                host="127.0.0.1", port=0, server_id=node_id, server_name=name)
        server = NodeServer(settings, CertPolicy())
        offered = offer_as or node_id

        async def locate() -> TunnelTarget:
            return self.target()

        async def serve(conn: asyncssh.SSHClientConnection) -> Any:
            return await server.listen_on(conn, offered, NODE_PORT)

        identity = AgentIdentity(cert_for or node_id, key, cert,
                                 self.host_ca.convert_to_public(), CLUSTER)
        agent = TunnelAgent(identity, locate, serve,
                            backoff=backoff or Backoff(first=0.05, cap=0.5))
        node = Node(name, node_id, server, agent, key, cert)
        assert self.router is not None
        self.router.ids[name] = cert_for or node_id
        self.nodes.append(node)
        if start:
            agent.start()
        return node

    # users

    def user_cert(self, logins: tuple[str, ...] = ("root",)) -> tuple[asyncssh.SSHKey,
                                                                       asyncssh.SSHCertificate]:
        key = new_key()
        now = datetime.now(UTC)
        cert = sign_user_cert(self.user_ca, key.convert_to_public(), key_id="alice",
                              principals=list(logins), valid_after=now - timedelta(minutes=1),
                              valid_before=now + timedelta(hours=1),
                              permit_port_forwarding=True)
        return key, cert

    async def connect(self, node: str, login: str = "root") -> asyncssh.SSHClientConnection:
        assert self.jump is not None
        key, cert = self.user_cert((login,))
        return await connect_via_proxy(
            proxy_host="127.0.0.1", proxy_port=self.jump.port, jump_user="alice", node=node,
            login=login, key=key, cert=cert, host_ca=self.host_ca.convert_to_public(),
            cluster_name=CLUSTER,
        )

    async def close(self) -> None:
        for node in self.nodes:
            await node.agent.stop()
            with contextlib.suppress(Exception):
                await node.server.stop()
        if self.jump is not None:
            await self.jump.stop()
        await self.stop_proxy()


async def run(conn: asyncssh.SSHClientConnection, command: str) -> str:
    result = await conn.run(command, check=True)
    out = result.stdout
    return out.decode() if isinstance(out, bytes) else str(out)


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}") from None

"""A small cluster for tunnel tests, on the test's own event loop: CAs, a tunnel server,
a jump host routing through it, and node agents serving real NodeServers.

Certificates come from limen.auth.ca (with the role@limen extensions the auth
service puts in), so the tunnel server judges what it would judge in a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncssh

from limen.auth.ca import sign_host_cert, sign_user_cert
from limen.client.ssh import host_ca_known_hosts
from limen.errors import ConnectionProblem, NotFound
from limen.node import CertPolicy, NodeServer, NodeSettings
from limen.proxy.ssh_jump import JumpHost, JumpSettings, NodeRoute, open_tcp_stream
from limen.sshalgs import HOST_KEY_ALGS, hardened_options
from limen.tunnel.agent import AgentIdentity, Locate, TunnelAgent
from limen.tunnel.backoff import Backoff
from limen.tunnel.discovery import TunnelTarget
from limen.tunnel.registry import NODE_PORT
from limen.tunnel.server import TunnelServer, TunnelSettings
from tests.support.event_shapes import proxy_problem

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
        self.invalid: list[str] = []  # events the auth service would refuse, and why

    async def on_event(self, name: str, fields: dict[str, Any]) -> None:
        problem = proxy_problem(name, fields)
        if problem is not None:
            self.invalid.append(problem)
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
        self._jumps: list[asyncssh.SSHClientConnection] = []
        # Heartbeats inside tunnels: (node id, agent address) as the server answered them,
        # the nodes whose certificates it should now refuse, and whether it takes beats.
        self.beats: list[tuple[str, str]] = []
        self.revoked: dict[str, str] = {}
        self.takes_heartbeats = True
        self.beat_delay = 0.0  # seconds the server takes over each answer
        self.beat_extra: dict[str, Any] = {}  # more in each answer
        self.beat_failure: Exception | None = None  # what the server's handler raises
        # Access feeds inside tunnels: (node id, agent address) of each one opened, the
        # lines each sends after its first, {"op": "ready"}, and whether the server
        # takes feeds. With ``feed_flood`` a feed sends 64 KiB lines without end,
        # counted in ``flooded``.
        self.feeds: list[tuple[str, str]] = []
        self.feed_lines: asyncio.Queue[bytes] = asyncio.Queue()
        self.takes_feeds = True
        self.feed_flood = False
        self.flooded = 0

    # the proxy

    async def start_proxy(self, port: int = 0) -> None:
        settings = TunnelSettings("127.0.0.1", port or self.tunnel_port, self.proxy_key,
                                  [self.proxy_cert], [self.host_ca.convert_to_public()],
                                  CLUSTER)
        self.tunnels = TunnelServer(
            settings, self.recorder, revoked=lambda cert: self.revoked.get(cert.key_id),
            heartbeat=self._beat if self.takes_heartbeats else None,
            feed=self._feed if self.takes_feeds else None)
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

    async def _beat(self, node_id: str, peer: str) -> dict[str, Any]:
        self.beats.append((node_id, peer))
        await asyncio.sleep(self.beat_delay)
        if self.beat_failure is not None:
            raise self.beat_failure
        return {"name": node_id, "tunnel_peers": [], **self.beat_extra}

    async def _feed(self, node_id: str, peer: str) -> AsyncIterator[bytes]:
        self.feeds.append((node_id, peer))
        return self._feed_stream()

    async def _feed_stream(self) -> AsyncIterator[bytes]:
        yield b'{"op": "ready"}\n'
        while self.feed_flood:
            self.flooded += 1
            yield b'{"op": "put", "pad": "' + b"x" * 65536 + b'"}\n'
        while True:
            yield await self.feed_lines.get()

    async def stop_proxy(self) -> None:
        if self.tunnels is not None:
            await self.tunnels.stop()

    def target(self) -> TunnelTarget:
        return TunnelTarget("127.0.0.1", self.tunnel_port, self.proxy_key.convert_to_public())

    # nodes

    async def add_node(self, name: str, *, cert_for: str | None = None,
                       offer_as: str | None = None, start: bool = True,
                       backoff: Backoff | None = None,
                       target: Callable[[], TunnelTarget] | None = None,
                       locate: Locate | None = None,
                       data: bool = False,
                       **agent_options: Any) -> Node:
        """A node and its agent; with ``data`` the agent offers data connections
        (limen.tunnel.data_link), else every session crosses the tunnel itself."""
        node_id = str(uuid.uuid4())
        key = new_key()
        cert = host_cert(self.host_ca, key, cert_for or node_id,
                         [cert_for or node_id, name, f"{name}.{CLUSTER}"])
        settings = NodeSettings(host_key=key, host_certs=[cert],
                                user_ca_keys=[self.user_ca.convert_to_public()],
                                host="127.0.0.1", port=0, server_id=node_id, server_name=name)
        server = NodeServer(settings, CertPolicy())
        offered = offer_as or node_id

        async def locate_target() -> TunnelTarget:
            return (target or self.target)()

        async def serve(conn: asyncssh.SSHClientConnection) -> Any:
            return await server.listen_on(conn, offered, NODE_PORT)

        identity = AgentIdentity(cert_for or node_id, key, cert,
                                 self.host_ca.convert_to_public(), CLUSTER)
        agent = TunnelAgent(identity, locate or locate_target, serve,
                            serve_socket=server.serve_socket if data else None,
                            backoff=backoff or Backoff(first=0.05, cap=0.5), **agent_options)
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
        """login@node through the jump host, as ``ssh -J`` does."""
        assert self.jump is not None
        key, cert = self.user_cert((login,))
        common: dict[str, Any] = {
            "client_keys": [(key, cert)],
            "known_hosts": host_ca_known_hosts(self.host_ca.convert_to_public()),
            "agent_path": None, "config": [], "preferred_auth": "publickey",
            "server_host_key_algs": HOST_KEY_ALGS, **hardened_options(),
        }
        jump = await asyncssh.connect("127.0.0.1", self.jump.port, username="alice", **common)
        self._jumps.append(jump)
        return await asyncssh.connect(node, NODE_PORT, tunnel=jump, username=login, **common)

    async def close(self) -> None:
        for jump in self._jumps:
            jump.close()
        for node in self.nodes:
            await node.agent.stop()
            with contextlib.suppress(Exception):
                await node.server.stop()
        if self.jump is not None:
            await self.jump.stop()
        await self.stop_proxy()
        assert not self.recorder.invalid, self.recorder.invalid


async def run(conn: asyncssh.SSHClientConnection, command: str) -> str:
    result = await conn.run(command, check=True)
    out = result.stdout
    return out.decode() if isinstance(out, bytes) else str(out)


async def run_once(kit: Kit, node: str, command: str) -> str:
    """``command``'s output, on a connection of its own to ``node`` (closed after)."""
    conn = await kit.connect(node)
    try:
        return await run(conn, command)
    finally:
        conn.close()
        await conn.wait_closed()


async def bulk_both_ways(kit: Kit, node: str, up_bytes: int, down_bytes: int) -> None:
    """Random bytes up (checked by their digest on the node), zeros down, then a
    half-close: the client's EOF reaches the node, which may still answer after it."""
    conn = await kit.connect(node)
    try:
        data = os.urandom(up_bytes)
        up = await conn.run("sha256sum", input=data, encoding=None, check=True)
        assert up.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
        down = await conn.run(f"head -c {down_bytes} /dev/zero", encoding=None, check=True)
        assert down.stdout == bytes(down_bytes)
        echoed = await conn.run("cat; echo after-eof", input=b"abc", encoding=None)
        assert echoed.stdout == b"abcafter-eof\n"
    finally:
        conn.close()
        await conn.wait_closed()


class Relay:
    """A TCP relay in front of the tunnel server: a network path a test can break.

    ``freeze`` stops every byte on the connections it carries without closing them
    (a silently dead network: only keepalives notice); new connections pass again.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter, asyncio.Event]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> Relay:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        frozen = asyncio.Event()
        self._pairs.append((writer, up_writer, frozen))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.get_running_loop().create_task(self._copy(src, dst, frozen))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    frozen: asyncio.Event) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                if frozen.is_set():
                    await asyncio.Event().wait()  # swallow everything from now on
                dst.write(data)
                await dst.drain()
            dst.close()

    def freeze(self) -> None:
        for _, _, frozen in self._pairs:
            frozen.set()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for a, b, _ in self._pairs:
            a.close()
            b.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}") from None

"""The proxy's reverse tunnel server (port 3024): node agents dial in, users reach them.

An agent logs in with its node's host certificate as the SSH user named by its node
id, then asks for a ``tcpip-forward`` of (node id, NODE_PORT). Nothing listens
anywhere: the request registers the tunnel, and the proxy later opens
``forwarded-tcpip`` channels back through the agent, each one an SSH connection to
the node's own SSH service (registry.Tunnel.open_stream).

How host-certificate logins and ``tcpip-forward`` fit asyncssh:

1. Authentication is Limen's one SSH path (limen.sshauth): ``AgentHooks.judge``
   accepts the node's host certificate (host CA, role@limen = node, this cluster,
   validity, key id = user name = node id, and through ``revoked`` a node that is still
   registered, not locked, with its current certificate) and has asyncssh check the
   login signature with the certified key. ``TunnelServer.revoke`` closes a node's
   tunnel the moment the node is removed or locked.
2. A session channel is refused unless it asks for one of the tunnel's subsystems
   (limen.tunnel.subsystems): ``heartbeat@limen``, the node's heartbeat
   (limen.tunnel.heartbeat), or ``access-feed@limen``, its access feed
   (limen.tunnel.feed); each served for the node the connection logged in as, after its
   certificate is judged again.
3. Because asyncssh never saw a user certificate on this connection, its
   ``check_certificate_permission('port-forwarding')`` answers "allowed" (no
   certificate, no restriction) and the agent's ``tcpip-forward`` reaches our
   ``server_requested`` hook. That hook is the real gate: an agent may forward only
   (its own node id, NODE_PORT), and asyncssh opens no socket for it, because the
   hook returns a listener object of ours instead of True. Everything else an SSH
   client could ask for is refused: shells, commands, direct-tcpip, unix sockets.
4. An agent that also forwards (its node id, DATA_PORT), after its node, offers data
   connections: sessions then ask it to dial back one plain connection each
   (limen.tunnel.data_link). Those land on the same port, told apart by their first
   byte (data_gate.FirstBytes), or on the web port, and ``gate`` admits them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import asyncssh

from limen.clock import Clock, RealClock
from limen.errors import AccessDenied
from limen.proxy.ssh_jump import asyncssh_algs
from limen.sshauth import Accepted, CertAuthServer, CertFacts, TrustedKeys, judge_host
from limen.sshauth.judge import Revoked
from limen.sshauth.server import connection_factory
from limen.tcpkeepalive import keep_alive
from limen.tunnel.data_gate import DataGate, FirstBytes
from limen.tunnel.data_link import DATA_PORT
from limen.tunnel.feed import SUBSYSTEM as FEED_SUBSYSTEM
from limen.tunnel.feed import FeedHandler, FeedSession
from limen.tunnel.heartbeat import SUBSYSTEM as HEARTBEAT_SUBSYSTEM
from limen.tunnel.heartbeat import BeatHandler, HeartbeatSession
from limen.tunnel.registry import NODE_PORT, Tunnel, TunnelDirectory
from limen.tunnel.subsystems import NodeSubsystem, Session, SubsystemChannel

log = logging.getLogger(__name__)

DEFAULT_PORT = 3024


class TunnelObserver(Protocol):
    async def on_event(self, name: str, fields: dict[str, Any]) -> None: ...


@dataclass
class TunnelSettings:
    host: str
    port: int | None  # None: no listener of its own (multiplexed web port only)
    host_key: asyncssh.SSHKey  # the proxy's host key and certificate (role@limen=proxy)
    host_certs: Sequence[asyncssh.SSHCertificate]
    host_ca_keys: Sequence[asyncssh.SSHKey]  # agents' certificates must come from these
    cluster_name: str
    login_timeout: float = 15.0
    # The proxy asks only when it has heard nothing for 10 minutes (the agent's interval
    # too, limen.tunnel.agent): an idle node's heartbeat comes through the tunnel every
    # 5, so keepalives are sent only when beats stop. It drops a tunnel after three
    # unanswered asks; the kernel's TCP keepalives (limen.tcpkeepalive) notice a
    # vanished node far sooner.
    keepalive_interval: float = 600.0
    keepalive_count_max: int = 3


class _NoSocket(asyncssh.SSHListener):
    """What ``server_requested`` returns: registers the tunnel instead of listening.

    asyncssh closes its listeners when the connection ends or the agent cancels the
    forward, which is when the tunnel leaves the directory.
    """

    def __init__(self, hooks: AgentHooks, tunnel: Tunnel) -> None:
        super().__init__()
        self._hooks = hooks
        self._tunnel = tunnel
        self._closed = asyncio.Event()

    def get_port(self) -> int:
        return NODE_PORT

    def close(self) -> None:
        self._hooks.tunnel_closed(self._tunnel, None)
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()


class _DataOffer(asyncssh.SSHListener):
    """What ``server_requested`` returns for (node id, DATA_PORT): nothing to close."""

    def get_port(self) -> int:
        return DATA_PORT

    def close(self) -> None:
        pass

    async def wait_closed(self) -> None:
        pass


class AgentHooks(CertAuthServer):
    """Per-connection hooks: the node's host certificate, and the one request allowed."""

    not_a_certificate_hint = "a node agent logs in with its node's host certificate"

    def __init__(self, server: TunnelServer) -> None:
        super().__init__()
        self._server = server
        self._username = ""
        self.node_id: str | None = None  # set once the login signature checked out
        self.tunnels: list[Tunnel] = []
        self._beating = False  # a heartbeat is being answered on this connection
        self._feed: FeedSession | None = None  # the node's access feed on this connection

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        super().connection_made(conn)
        self._server.connections.add(self)

    def peer(self) -> str:
        return f"{self.remote_addr[0]}:{self.remote_addr[1]}" if self.remote_addr else ""

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        for tunnel in self.tunnels:
            self.tunnel_closed(tunnel, exc)
        if self.node_id is None and self.refusals:
            self._server.emit("auth", {
                "success": False, "method": "host-cert", "kind": "tunnel",
                "user": self._username, "addr.remote": self.peer(),
                "reason": "; ".join(self.refusals),
            })

    def tunnel_closed(self, tunnel: Tunnel, exc: Exception | None) -> None:
        if self._server.directory.remove(tunnel):
            log.info("node %s's tunnel from %s closed", tunnel.node_id, tunnel.peer)
            self._server.emit("tunnel.disconnect", {
                "server_id": tunnel.node_id, "addr.remote": tunnel.peer,
                "reason": str(exc) if exc else "closed",
            })

    def begin_auth(self, username: str) -> bool:
        self._username = username
        return True

    def judge(self, cert: CertFacts, username: str) -> Accepted:
        settings = self._server.settings
        node_id = judge_host(cert, self._server.host_cas, self._server.clock.now(),
                             cluster=settings.cluster_name, role="node",
                             revoked=self._server.revoked)
        if username != node_id:
            raise AccessDenied(
                f"node {node_id} may not open a tunnel as '{username}': an agent logs in "
                "as its own node id"
            )
        return Accepted(username, plain_key=True)

    async def auth_completed(self) -> None:
        assert self.cert is not None and self.conn is not None
        self.node_id = self.cert.key_id
        # Judged when the key was offered; a removal or lock since then found no node id
        # on this connection to close, so ask again now that revoke() will find it.
        reason = self._server.revoked(self.cert) if self._server.revoked else None
        if reason is not None:
            self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, f"limen: {reason}")

    def session_requested(self) -> Any:
        """One of the tunnel's subsystems (limen.tunnel.subsystems); no shell or command."""
        server = self._server
        if self.node_id is None or (server.heartbeat is None and server.feed is None):
            return False
        return SubsystemChannel(self._subsystem)

    def _subsystem(self, name: str) -> Session | None:
        """The session that serves ``name``: a heartbeat one at a time; the access feed,
        one a connection (a new one replaces the one before)."""
        assert self.node_id is not None
        if name == HEARTBEAT_SUBSYSTEM and self._server.heartbeat is not None:
            if self._beating:
                return None
            self._beating = True
            return HeartbeatSession(self.node_id, self.peer(), self._heartbeat,
                                    self._beat_done)
        if name == FEED_SUBSYSTEM and self._server.feed is not None:
            if self._feed is not None:
                self._feed.close()
            self._feed = FeedSession(self.node_id, self.peer(), self._open_feed,
                                     self._feed_done)
            return self._feed
        return None

    async def _heartbeat(self, node_id: str, peer: str) -> dict[str, Any]:
        handler = self._server.heartbeat
        assert handler is not None
        self._judge_again(node_id, peer, "heartbeat")
        return await handler(node_id, peer)

    async def _open_feed(self, node_id: str, peer: str) -> AsyncIterator[bytes]:
        handler = self._server.feed
        assert handler is not None
        self._judge_again(node_id, peer, "access feed")
        return await handler(node_id, peer)

    def _judge_again(self, node_id: str, peer: str, what: str) -> None:
        """Judged at login; a removal or lock since closes the tunnel, but ask again."""
        assert self.cert is not None
        reason = self._server.revoked(self.cert) if self._server.revoked else None
        if reason is not None:
            self._server.emit("auth", {
                "success": False, "method": "host-cert", "kind": "tunnel", "user": node_id,
                "server_id": node_id, "addr.remote": peer,
                "reason": f"{what} refused: {reason}",
            })
            raise AccessDenied(reason)

    def _feed_done(self, session: NodeSubsystem) -> None:
        if self._feed is session:
            self._feed = None

    def _beat_done(self, _session: NodeSubsystem) -> None:
        self._beating = False

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str,
                             orig_port: int) -> bool:
        return False  # agents offer their node; they reach nothing through the proxy

    def unix_connection_requested(self, dest_path: str) -> bool:
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        return False

    def server_requested(self, listen_host: str, listen_port: int) -> Any:
        conn, node_id = self.conn, self.node_id
        assert conn is not None and node_id is not None
        if listen_host == node_id.lower() and listen_port == DATA_PORT and self.tunnels:
            self.tunnels[-1].gate = self._server.gate
            return _DataOffer()
        if listen_host != node_id.lower() or listen_port != NODE_PORT:
            reason = (f"node {node_id} may offer only itself, not "
                      f"{listen_host}:{listen_port}")
            log.warning("tunnel refused: %s (from %s)", reason, self.peer())
            self._server.emit("auth", {
                "success": False, "method": "host-cert", "kind": "tunnel",
                "user": node_id, "server_id": node_id,
                "addr.remote": self.peer(), "reason": reason,
            })
            return False
        keep_alive(conn.get_extra_info("socket"))
        tunnel = Tunnel(node_id, conn, self._server.clock.now(), self.peer())
        self.tunnels.append(tunnel)
        self._server.directory.add(tunnel)
        log.info("node %s connected its tunnel from %s", node_id, tunnel.peer)
        self._server.emit("auth", {
            "success": True, "method": "host-cert", "kind": "tunnel", "user": node_id,
            "server_id": node_id, "addr.remote": tunnel.peer,
        })
        return _NoSocket(self, tunnel)


class TunnelServer:
    """Listens for node agents and keeps the directory of live tunnels."""

    def __init__(self, settings: TunnelSettings, observer: TunnelObserver | None = None, *,
                 clock: Clock | None = None, directory: TunnelDirectory | None = None,
                 revoked: Revoked | None = None, heartbeat: BeatHandler | None = None,
                 feed: FeedHandler | None = None) -> None:
        self.settings = settings
        self.observer = observer
        self.revoked = revoked  # why a node's certificate may no longer log in, or None
        self.heartbeat = heartbeat  # answers nodes' heartbeats in their tunnels, or None
        self.feed = feed  # opens nodes' access feeds in their tunnels, or None
        self.clock = clock or RealClock()
        self.directory = directory or TunnelDirectory(self.clock)
        self.host_cas = TrustedKeys(settings.host_ca_keys)
        self.connections: set[AgentHooks] = set()
        self.gate = DataGate(self.emit)
        self._server: asyncio.Server | None = None
        self._options: asyncssh.SSHServerConnectionOptions | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the tunnel server is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        options = await asyncssh.SSHServerConnectionOptions.construct(
            server_factory=lambda: AgentHooks(self),
            server_host_keys=[self.settings.host_key],
            server_host_certs=list(self.settings.host_certs),
            password_auth=False,
            kbdint_auth=False,
            gss_host=None,
            allow_pty=False,
            agent_forwarding=False,
            x11_forwarding=False,
            login_timeout=self.settings.login_timeout,
            keepalive_interval=self.settings.keepalive_interval,
            keepalive_count_max=self.settings.keepalive_count_max,
            **asyncssh_algs(),
        )
        self._options = options
        if self.settings.port is None:
            return
        loop = asyncio.get_running_loop()
        agents = self.protocol_factory()
        timeout = self.settings.login_timeout
        self._server = await loop.create_server(
            lambda: FirstBytes(agents, self.gate, timeout), self.settings.host or None,
            self.settings.port, reuse_address=True, backlog=128,
        )
        log.info("tunnel server listening on port %d", self.port)

    def protocol_factory(self) -> Callable[[], asyncio.Protocol]:
        """Agent connections, from this server's port or handed over by the web port."""
        assert self._options is not None
        return connection_factory(self._options)

    async def stop(self) -> None:
        """Stop listening and close every tunnel (agents reconnect to the next proxy)."""
        if self._server is not None:
            self._server.close()
        conns = [hooks.conn for hooks in self.connections if hooks.conn is not None]
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 5)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def revoke(self, node_id: str, reason: str) -> None:
        """The node was removed or locked: close its tunnel and any login of it, now."""
        hooks = [h for h in self.connections if h.node_id == node_id]
        tunnel = self.directory.get(node_id)
        if tunnel is not None:
            log.info("closing node %s's tunnel: %s", node_id, reason)
            tunnel.close(f"limen: {reason}")
        for hook in hooks:
            if hook.conn is not None:
                hook.conn.disconnect(asyncssh.DISC_BY_APPLICATION, f"limen: {reason}")
        if tunnel is not None or hooks:
            self.emit("auth", {"success": False, "method": "host-cert", "kind": "tunnel",
                               "user": node_id, "server_id": node_id,
                               "reason": f"tunnel closed: {reason}"})

    def emit(self, name: str, fields: dict[str, Any]) -> None:
        """Hand an event to the observer without holding up asyncssh's callback."""
        if self.observer is None:
            return
        task = asyncio.get_running_loop().create_task(self._notify(name, fields))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notify(self, name: str, fields: dict[str, Any]) -> None:
        assert self.observer is not None
        try:
            await self.observer.on_event(name, {"cluster_name": self.settings.cluster_name,
                                                **fields})
        except Exception:  # an observer's failure must not touch the tunnels
            log.exception("tunnel server observer failed on %s", name)

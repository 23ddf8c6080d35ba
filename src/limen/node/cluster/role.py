"""The node role inside `limen start`: identity, SSH service, heartbeats, renewals."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import asyncssh

from limen.auth.access_cache import AccessCache, Feed
from limen.auth.node_credentials import token_id
from limen.auth.node_registry import JoinRequest
from limen.auth.server import AuthServer
from limen.clock import Clock
from limen.config import JoinOptions, NodeConfig, split_host_port
from limen.errors import AccessDenied, BadParameter
from limen.node.audit.reporter import NodeAudit
from limen.node.cluster.link import ClusterLink, LocalLink, RemoteLink
from limen.node.cluster.membership import (
    Heartbeat,
    NodeIdentity,
    advertise_address,
    host_key_for,
    join_remote,
    load_identity,
    save_identity,
)
from limen.node.cluster.policy import ClusterObserver, ClusterPolicy
from limen.node.cluster.renewal import CredentialRenewal
from limen.node.ssh.identity import UserIdentity
from limen.node.ssh.server import NodeServer
from limen.node.ssh.settings import NodeSettings
from limen.resources import Lock
from limen.timers import LoopTimers
from limen.tunnel.agent import TunnelAgent
from limen.tunnel.feed import TunnelFeed
from limen.tunnel.node_role import start_agent, start_peer_tunnels
from limen.tunnel.peers import PeerTunnels

log = logging.getLogger(__name__)


class NodeRole:
    def __init__(
        self,
        config: NodeConfig,
        data_dir: Path,
        clock: Clock,
        auth: AuthServer | None,
        join: JoinOptions,
    ) -> None:
        self.config = config
        self.data_dir = data_dir
        self.clock = clock
        self.auth = auth
        self.join = join
        self.server: NodeServer | None = None
        self.link: ClusterLink | None = None
        self.identity: NodeIdentity | None = None
        self._heartbeat: Heartbeat | None = None
        self.renewal: CredentialRenewal | None = None
        self.agent: TunnelAgent | None = None
        self.peer_tunnels: PeerTunnels | None = None
        self.cache: AccessCache | None = None
        self.audit: NodeAudit | None = None
        self.listening = False  # whether the node opened a port of its own

    @property
    def name(self) -> str:
        return self.config.name or socket.gethostname().split(".")[0]

    @property
    def tunneled(self) -> bool:
        """A node joining a cluster elsewhere with no address to advertise dials out to
        the proxy (a reverse tunnel); the node inside the auth process stays direct."""
        return self.auth is None and not self.config.advertise_addr

    async def start(self) -> None:
        host, port = split_host_port(self.config.listen_addr)
        tunneled = self.tunneled
        planned = "" if tunneled else advertise_address(host, port, self.config.advertise_addr)
        self.identity = await self._identity(planned)
        self.link = self._link(self.identity)
        settings = NodeSettings(
            host_key=host_key_for(self.data_dir),
            host_certs=[self.identity.certificate()],
            user_ca_keys=[self.identity.user_ca_key()],
            host=host,
            port=port,
            server_id=self.identity.node_id,
            server_name=self.identity.name,
            env_allowlist=self.config.env_allowlist,
        )
        # What the cluster registered: for a joined node the token's labels win.
        labels = self.identity.labels or self.config.labels
        self.cache = AccessCache(self._access_feed(tunneled), self._on_lock)
        policy = ClusterPolicy(
            self.cache, self.identity.node_id, self.identity.name, labels, self.clock
        )
        # Before serving: report the end of sessions a crash interrupted.
        self.audit = NodeAudit(self.link, self.data_dir, self.identity.node_id, self.identity.name)
        await self.audit.start()
        observer = ClusterObserver(self.link, self.identity.node_id, self.identity.name, self.audit)
        self.server = NodeServer(settings, policy, observer, timers=LoopTimers(self.clock))
        self.audit.attach(self.server)
        self.listening = self._opens_port(tunneled)
        if self.listening:
            await self.server.start()
        addr = (
            ""
            if tunneled
            else advertise_address(host, self.server.port, self.config.advertise_addr)
        )
        self.renewal = CredentialRenewal(self.link, self.identity, settings.host_key,
                                         self.data_dir, self.clock, self._use_certificate)
        self._heartbeat = Heartbeat(self.link, self.identity, addr, observer.live_trackers,
                                    self.renewal)
        await self._heartbeat.beat()  # present at the real port before anyone dials
        self._heartbeat.start()
        if tunneled:
            self.agent = start_agent(
                self.identity, settings.host_key, self.server, on_connected=self._heartbeat.beat,
                data_connections=self.config.tunnel_data_connections,
            )
            self._heartbeat.through_tunnel = self.agent.heartbeat  # no HTTPS while it is up
        # Started once the tunnel agent exists: a tunnel-only node's feed waits for it.
        self.cache.start()
        if isinstance(self.link, RemoteLink):  # learn the other proxies, to fail over to
            peers = start_peer_tunnels(self.agent, self.server, self.identity,
                                       self._heartbeat.quiet_seconds())
            self.peer_tunnels = peers
            self._heartbeat.on_answer = peers.hear  # its answers list the proxies too
            self.link.fallbacks = lambda: peers.web_addrs
        if tunneled:
            log.info("node %s (%s) serving SSH through a reverse tunnel to %s",
                     self.identity.name, self.identity.node_id, self.identity.proxy)
        else:
            log.info("node %s (%s) serving SSH on %s", self.identity.name,
                     self.identity.node_id, addr)

    def _access_feed(self, tunneled: bool) -> Feed:
        """Where the access cache's feed comes from: a node that takes sessions only
        through its tunnels reads it inside one of them (limen.tunnel.feed)."""
        assert self.link is not None
        if self._opens_port(tunneled):
            return self.link.access_feed
        return TunnelFeed(self._tunnel_agents, self.link.access_feed)

    def _opens_port(self, tunneled: bool) -> bool:
        """Behind NAT nobody can dial in: a tunneled node opens a port only when one was
        asked for (``ssh.listen_addr``)."""
        return not tunneled or "listen_addr" in self.config.model_fields_set

    def _tunnel_agents(self) -> list[TunnelAgent]:
        peers = list(self.peer_tunnels.agents.values()) if self.peer_tunnels else []
        return [self.agent, *peers] if self.agent is not None else peers

    @property
    def heartbeat(self) -> Heartbeat | None:
        return self._heartbeat

    def _use_certificate(self, cert: asyncssh.SSHCertificate) -> None:
        """A renewed host certificate: new connections get it; live ones go on."""
        if self.server is not None:
            self.server.update_host_certs([cert])
        if self.agent is not None:
            self.agent.use_certificate(cert)
        if self.peer_tunnels is not None:
            for agent in self.peer_tunnels.agents.values():
                agent.use_certificate(cert)

    async def _on_lock(self, lock: Lock) -> None:
        """End every connection the lock targets (sessions, forwards and all), telling
        the person why where a terminal exists."""
        if self.server is None or self.identity is None:
            return
        names = (self.identity.node_id, self.identity.name)
        cache = self.cache

        def applies(user: UserIdentity, login: str) -> bool:
            roles = cache.roles_of(user.user) if cache is not None else []
            return lock.applies_to(user=user.user, roles=roles, login=login, node_names=names)

        await self.server.end_connections(applies, f"limen: {lock.refusal()}", "locked")

    async def _identity(self, addr: str) -> NodeIdentity:
        existing = load_identity(self.data_dir)
        if existing is not None and existing.name != self.name:
            existing = None  # renamed: a new registration
        if self.auth is not None:
            return await self._register_locally(existing, addr)
        if existing is not None and not self._joins_again(existing):
            return existing
        if not (self.config.proxy_addr and self.config.join_token):
            raise BadParameter(
                "a node without a local auth service joins with --token TOKEN --proxy HOST:PORT"
            )
        return await join_remote(
            self.data_dir,
            self.config.proxy_addr,
            self.config.join_token,
            self.name,
            self.config.labels,
            addr,
            self.config.ca_pin,
            self.join.insecure,
            self.clock,
        )

    def _joins_again(self, existing: NodeIdentity) -> bool:
        """Whether a remote node with an identity on disk must present its token again.

        Yes when it was given a token other than the one it joined with (an operator's
        way to re-join it), or when its credentials lapsed; then it needs a new token.
        """
        token = self.config.join_token
        if token and token_id(token) != existing.join_token_id:
            return True
        expired = existing.credentials_expire()
        if expired > self.clock.now():
            return False
        raise AccessDenied(
            f"this node's credentials expired at {expired:%Y-%m-%d %H:%M:%S} UTC: it was away "
            "longer than their lifetime. Join it again with a new token (limen tokens add "
            "--type node on the auth host, then limen start --roles node --token NEW ...)"
        )

    async def _register_locally(self, existing: NodeIdentity | None, addr: str) -> NodeIdentity:
        """Same process as the auth service: no token; fresh credentials at every start."""
        assert self.auth is not None
        key = host_key_for(self.data_dir)
        request = JoinRequest(
            name=self.name,
            addr=addr,
            labels=self.config.labels,
            public_key=key.export_public_key("openssh").decode(),
            node_id=existing.node_id if existing is not None else "",
        )
        result = await self.auth.nodes.register(request, self.config.labels, local=True)
        identity = NodeIdentity(
            node_id=result.node_id,
            name=self.name,
            cluster=result.cluster,
            host_cert=result.host_cert,
            host_ca=result.host_ca,
            user_ca=result.user_ca,
            heartbeat_seconds=result.heartbeat_seconds,
            labels=result.labels,
        )
        save_identity(self.data_dir, identity)
        return identity

    def _link(self, identity: NodeIdentity) -> ClusterLink:
        if self.auth is not None:
            return LocalLink(self.auth, identity.node_id)
        return RemoteLink(identity.proxy, identity.tls_ca, identity.api_token)

    async def stop(self) -> None:
        if self._heartbeat is not None:
            await self._heartbeat.stop()
        if self.cache is not None:
            await self.cache.stop()
        if self.server is not None:
            await self.server.stop()
        if self.audit is not None:  # after the sessions ended: ships their last events
            await self.audit.stop()
        if self.peer_tunnels is not None:
            await self.peer_tunnels.stop()
            self.peer_tunnels = None
        if self.agent is not None:  # after the server told tunneled sessions why they end
            await self.agent.stop()
        if self.link is not None:
            await self.link.close()

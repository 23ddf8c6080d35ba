"""The proxy's SSH jump host (port 3023): ``ssh -J user@proxy login@node`` and ``limen ssh``.

It authenticates only user certificates from the cluster's user CA, accepts
``direct-tcpip`` channels to nodes by name, ``name.cluster`` or id (the port is
ignored: a node's SSH service is the only thing reachable), asks node policy,
dials the node through the router and copies bytes with our own loops
(``ssh_pipe``). Sessions, shells and remote forwards at the proxy are refused.

Reaching a node here is node access, not port forwarding, so it works with
certificates that lack ``permit-port-forwarding`` (``JumpServer.certificate_permission``).

The cluster glue supplies a NodeRouter (heartbeats, reverse tunnels), a
JumpPolicy (roles, locks) and an observer (audit). ``StaticRouter`` and a
None policy are the simple stand-ins for tests and single-node set-ups.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncssh

from limen.clock import Clock, RealClock
from limen.diag import metrics
from limen.errors import ConnectionProblem
from limen.proxy.ssh_direct import DirectConnection
from limen.proxy.ssh_hooks import PROXY_SESSION_MESSAGE, JumpServer, expired_message
from limen.proxy.ssh_routes import (
    NODE_DIAL_TIMEOUT,
    JumpConnection,
    JumpIdentity,
    JumpObserver,
    JumpPolicy,
    NodeOpener,
    NodeRoute,
    NodeRouter,
    StaticRouter,
    open_tcp_stream,
    strip_cluster,
)
from limen.sshalgs import hardened_options
from limen.sshauth import TrustedKeys
from limen.sshauth.server import connection_factory, listen
from limen.timers import LoopTimers, TimerHandle, Timers

__all__ = [
    "NODE_DIAL_TIMEOUT",
    "PROXY_SESSION_MESSAGE",
    "JumpHost",
    "JumpIdentity",
    "JumpObserver",
    "JumpPolicy",
    "JumpSettings",
    "NodeRoute",
    "NodeRouter",
    "StaticRouter",
    "open_tcp_stream",
    "strip_cluster",
]

log = logging.getLogger(__name__)


@dataclass
class JumpSettings:
    """Where the jump host listens and what it trusts.

    ``host_certs`` are the proxy's host certificates (principals: every listen
    address, 127.0.0.1, localhost); ``user_ca_keys`` the public keys of the
    cluster's user CA (several during a rotation).
    """

    host: str
    port: int | None  # None: no listener of its own (multiplexed web port only)
    host_key: asyncssh.SSHKey
    host_certs: Sequence[asyncssh.SSHCertificate]
    user_ca_keys: Sequence[asyncssh.SSHKey]
    cluster_name: str
    login_timeout: float = 30.0
    # SSH window per channel; larger than asyncssh's 2 MiB default for bulk copies.
    channel_window: int = 8 * 1024 * 1024
    # The largest packet a client may send on a channel (asyncssh's default: 32 KiB).
    # OpenSSH clients send 32 KiB packets anyway; `limen proxy ssh` and `limen ssh` fill
    # bigger ones, and every packet costs the same Python work whatever its size.
    channel_max_packet: int = 128 * 1024
    # A lock or expiry: nodes end their sessions first (they can tell the person at the
    # terminal why; the proxy cannot read the encrypted session), the proxy ends what
    # is still open this many seconds later.
    node_grace: float = 1.0


class JumpHost:
    """The SSH listener on the proxy that hands authenticated users on to nodes."""

    def __init__(
        self,
        settings: JumpSettings,
        router: NodeRouter,
        policy: JumpPolicy | None = None,
        observer: JumpObserver | None = None,
        *,
        clock: Clock | None = None,
        timers: Timers | None = None,
    ) -> None:
        self.settings = settings
        self.router = router
        self.policy = policy
        self.observer = observer
        self.clock = clock or RealClock()
        self.timers: Timers = timers or LoopTimers(self.clock)
        if not settings.user_ca_keys:
            raise ValueError("the jump host needs at least one user CA key")
        self.trusted = TrustedKeys(settings.user_ca_keys)
        self._server: asyncio.Server | None = None
        self._options: asyncssh.SSHServerConnectionOptions | None = None
        self.connections: set[JumpConnection] = set()  # SSH, direct, web terminals
        self._tasks: set[asyncio.Task[None]] = set()
        # Stopped with the jump host (watchers the cluster glue attaches).
        self.on_stop: list[Callable[[], Awaitable[None]]] = []
        # Agentless OpenSSH nodes: the SSH server the proxy runs for them (None: refused).
        self.openssh: NodeOpener | None = None

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the jump host is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connection_count(self) -> int:
        return len(self.connections)

    async def start(self) -> None:
        options = await asyncssh.SSHServerConnectionOptions.construct(
            server_factory=lambda: JumpServer(self),
            server_host_keys=[self.settings.host_key],
            server_host_certs=list(self.settings.host_certs),
            password_auth=False,
            kbdint_auth=False,
            gss_host=None,
            allow_pty=False,
            agent_forwarding=False,
            x11_forwarding=False,
            login_timeout=self.settings.login_timeout,
            **asyncssh_algs(),
        )
        self._options = options
        if self.settings.port is None:  # served only through the multiplexed web port
            return
        self._server = await listen(self.settings.host, self.settings.port, options)
        log.info("jump host listening on port %d", self.port)

    def protocol_factory(self) -> Callable[[], asyncio.Protocol]:
        """Connections handed over by another listener (the multiplexed web port)."""
        assert self._options is not None
        return connection_factory(self._options)

    def direct_factory(self) -> Callable[[], asyncio.Protocol]:
        """Direct connections to nodes inside TLS (ALPN limen-node): no SSH layer here."""
        return lambda: DirectConnection(self)

    async def stop(self) -> None:
        """Stop listening, close every connection (and its node streams), flush events."""
        for stop in self.on_stop:
            await stop()
        if self._server is not None:
            self._server.close()
        conns = list(self.connections)
        for conn in conns:
            conn.close()
        for conn in conns:
            await conn.wait_closed()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # locks and expiry

    async def connection_deadline(self, identity: JumpIdentity) -> datetime | None:
        """When a connection of ``identity`` ends by itself: its certificate's expiry,
        if the policy (the roles' disconnect_expired_cert) says so."""
        if self.policy is None:
            return identity.valid_before
        try:
            return await self.policy.connection_deadline(identity)
        except Exception:  # fail closed: end at expiry
            log.exception("jump host: the connection policy failed for %s", identity.user)
            return identity.valid_before

    async def watch_expiry(self, identity: JumpIdentity,
                           end: Callable[[str], None]) -> TimerHandle | None:
        """Call ``end`` for a connection of ``identity`` when it ends by itself (see
        connection_deadline). Sessions the proxy relays to OpenSSH nodes end at the
        deadline, saying why; the connection ``node_grace`` later, as those on Limen nodes
        end there first (the node can tell the person at the terminal why)."""
        deadline = await self.connection_deadline(identity)
        if deadline is None:
            return None
        message = expired_message(identity)

        def expiring() -> None:
            if self.openssh is not None:
                self.openssh.end_sessions(lambda other, _route, _login: other is identity,
                                          message, "certificate expired")
            asyncio.get_running_loop().call_later(self.settings.node_grace, end, message)

        return self.timers.call_at(deadline, expiring)

    def end_connections(self, applies: Callable[[JumpIdentity], bool], message: str) -> int:
        """End every connection whose identity ``applies``, and all its channels."""
        targeted = [c for c in list(self.connections)
                    if c.identity is not None and applies(c.identity)]
        for conn in targeted:
            conn.end(message)
        return len(targeted)

    def end_channels(self, applies: Callable[[JumpIdentity, NodeRoute], bool]) -> int:
        """End the channels (identity, node) that ``applies`` picks."""
        ended = 0
        for conn in list(self.connections):
            ident = conn.identity
            if ident is not None:
                ended += conn.end_channels_to(lambda route, i=ident: applies(i, route))
        return ended

    # events

    def emit(self, name: str, fields: dict[str, Any]) -> None:
        """Hand an event to the observer without holding up the caller."""
        if self.observer is None:
            return
        task = asyncio.get_running_loop().create_task(self.notify(name, fields))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def notify(self, name: str, fields: dict[str, Any]) -> None:
        """Hand an event to the observer and wait for it (audit before acknowledging)."""
        if name == "proxy.connect":
            metrics.jump_connection(bool(fields.get("allowed")))
        if self.observer is None:
            return
        fields = {"cluster_name": self.settings.cluster_name, **fields}
        try:
            await self.observer.on_event(name, fields)
        except Exception:  # an observer's failure must not break the data path
            log.exception("jump host observer failed on %s", name)

    # nodes

    async def dial(
        self, identity: JumpIdentity, target: str
    ) -> tuple[NodeRoute, asyncio.StreamReader, asyncio.StreamWriter]:
        """Resolve, check policy, then connect; LimenError says why not."""
        route = await self.router.resolve(strip_cluster(target, self.settings.cluster_name))
        if self.policy is not None:
            await self.policy.check_node_access(identity, route)
        if route.kind == "openssh":
            if self.openssh is None:
                raise ConnectionProblem(f"node '{route.name}' is an OpenSSH node, which this "
                                        "proxy does not reach")
            reader, writer = await self.openssh.open(identity, route)
            return route, reader, writer
        reader, writer = await self.router.open_stream(route)
        return route, reader, writer


def asyncssh_algs() -> dict[str, Any]:
    """hardened_options() as asyncssh takes them.

    The shared list names certificate types among the signature algorithms (what
    OpenSSH calls PubkeyAcceptedAlgorithms); asyncssh rejects those as signature
    algorithms and accepts certificates of the plain types anyway.
    """
    options = hardened_options()
    options["signature_algs"] = [
        alg for alg in options["signature_algs"] if "-cert-v01@" not in alg
    ]
    return options


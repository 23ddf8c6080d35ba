"""The node's reverse-tunnel agent: dial out to the proxy, offer the node, stay connected.

A node behind NAT has no address the proxy can dial. Its agent connects to the
proxy's tunnel server as an SSH client, logs in with the node's host certificate and
asks for a ``tcpip-forward`` of (node id, NODE_PORT); every channel the proxy opens
back becomes an SSH connection to the node's own SSH service (``serve``, normally
``NodeServer.listen_on``). One tunnel carries any number of sessions.

The link stays honest with the kernel's TCP keepalives (a minute of silence; see
limen.tcpkeepalive) and SSH keepalives (10 minutes; three unanswered and the agent gives
up on the connection), and the node's heartbeats cross it (``heartbeat``). The agent
reconnects forever with jittered exponential backoff capped at 10 s, so after a proxy
restart it is back within seconds of the proxy. ``on_connected`` runs after each
(re)connection: the node uses it to send a heartbeat at once, so a registration that
expired during a long outage comes back without waiting for the next heartbeat tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncssh
import httpx

from limen.client.ssh import host_ca_known_hosts
from limen.client.tls_tunnel import ALPN_TUNNEL, TLSTunnel
from limen.clock import Clock, RealClock
from limen.errors import AccessDenied, ConnectionProblem, LimenError
from limen.sshalgs import HOST_KEY_ALGS, hardened_options
from limen.tasks import cancel_and_wait
from limen.tcpkeepalive import keep_alive
from limen.tunnel.backoff import Backoff
from limen.tunnel.data_dialer import DataDialer, ServeSocket
from limen.tunnel.data_link import DATA_PORT
from limen.tunnel.discovery import TunnelTarget, fetch_ping, ping_client, target_from_ping
from limen.tunnel.heartbeat import beat_through

log = logging.getLogger(__name__)

# An SSH keepalive only after 10 minutes without a word from the proxy (its interval
# too): every keepalive wakes the proxy once per tunnel, so with thousands of tunnels
# their interval is idle CPU, and an idle node's heartbeat already crosses the tunnel
# every 5 minutes (heartbeat()), which resets both sides' timers. What keeps NAT gateways
# (AWS 350 s, Azure 240 s) from forgetting a quiet tunnel, and notices a proxy that
# vanished within about two minutes, is the kernel's TCP keepalive on the tunnel's
# socket (limen.tcpkeepalive); the SSH keepalive catches a proxy process that holds the
# connection but no longer answers, after three unanswered (30 minutes).
KEEPALIVE_INTERVAL = 600.0
KEEPALIVE_COUNT_MAX = 3
CONNECT_TIMEOUT = 10.0
# A tunnel that stayed up this long starts the backoff afresh when it ends. One that
# drops sooner keeps it growing: two processes with the same identity kick each other
# out (the proxy keeps the newest), and must not do so many times a second.
STABLE_SECONDS = 10.0

Locate = Callable[[], Awaitable[TunnelTarget]]
Serve = Callable[[asyncssh.SSHClientConnection], Awaitable[Any]]


@dataclass(frozen=True)
class AgentIdentity:
    node_id: str
    host_key: asyncssh.SSHKey
    host_cert: asyncssh.SSHCertificate
    host_ca: asyncssh.SSHKey  # the proxy's host certificate must come from this CA
    cluster: str


# Tries that dial a served answer again before the proxy is asked anew (``served``):
# with the agent's backoff (0.5 s, doubling to 10 s, jittered) 23 to 45 s, longer than a
# proxy takes to restart.
REUSE_TRIES = 8


class ProxyLocator:
    """Asks the proxy where its tunnel server is, and remembers the last good answer
    for when the web API is down too (the usual case during a proxy restart)."""

    def __init__(self, proxy: str, tls_ca_pem: str) -> None:
        self.proxy = proxy
        self.tls_ca_pem = tls_ca_pem
        self.last: TunnelTarget | None = None
        #: The answer given is the last one again, not asked for (see ``served``).
        self.reused = False
        self._reuse_left = 0
        # Kept between tries: a client of its own each time cost more CPU than the ping.
        self._http: httpx.AsyncClient | None = None

    def served(self) -> None:
        """The last answer led to a tunnel that came up: the next REUSE_TRIES calls give
        it again without asking. After a proxy restart every node reconnects at the same
        moment, and an ask is a TLS handshake and a request per node, on the proxy they
        all wait for and in each node; what it would say (the tunnel's address, the
        proxy's host key) rarely changes. ``doubt`` ends that at once."""
        self._reuse_left = REUSE_TRIES

    def doubt(self) -> None:
        """The last answer looks wrong (another host key there): ask at the next call."""
        self._reuse_left = 0

    async def __call__(self) -> TunnelTarget:
        self.reused = False
        if self._reuse_left > 0 and self.last is not None:
            self._reuse_left -= 1
            self.reused = True
            return self.last
        if self._http is None:
            self._http = ping_client(self.tls_ca_pem)
        try:
            ping = await fetch_ping(self.proxy, self.tls_ca_pem, self._http)
            self.last = target_from_ping(ping, self.proxy, self.tls_ca_pem)
        except LimenError:
            if self.last is None:
                raise
            self.reused = True
        return self.last

    async def aclose(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()


class TunnelAgent:
    def __init__(
        self,
        identity: AgentIdentity,
        locate: Locate,
        serve: Serve,
        *,
        on_connected: Callable[[], Awaitable[None]] | None = None,
        serve_socket: ServeSocket | None = None,
        backoff: Backoff | None = None,
        clock: Clock | None = None,
        keepalive_interval: float = KEEPALIVE_INTERVAL,
        keepalive_count_max: int = KEEPALIVE_COUNT_MAX,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.identity = identity
        self.locator = locate
        self._locate = locate
        self._serve = serve
        self._on_connected = on_connected
        # Given: the agent offers data connections (limen.tunnel.data_link) and serves
        # the node's SSH on each with this.
        self._serve_socket = serve_socket
        self.dialer: DataDialer | None = None
        self.backoff = backoff or Backoff()
        self.clock = clock or RealClock()
        self.keepalive_interval = keepalive_interval
        self.keepalive_count_max = keepalive_count_max
        self.connect_timeout = connect_timeout
        self.conn: asyncssh.SSHClientConnection | None = None
        self.connected_since: datetime | None = None
        self.connects = 0  # how many times a tunnel came up
        self.last_error = ""
        self._up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def serves_data(self) -> ServeSocket | None:
        """How the agent serves data connections, or None when it offers none."""
        return self._serve_socket

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    def use_certificate(self, cert: asyncssh.SSHCertificate) -> None:
        """Log in with a renewed host certificate from the next connection on.

        The tunnel that is up stays up: the proxy checked the certificate when the agent
        logged in, and the node's SSH service inside serves the renewed one already."""
        self.identity = replace(self.identity, host_cert=cert)

    async def heartbeat(self) -> dict[str, Any] | None:
        """The node's heartbeat through the tunnel (limen.tunnel.heartbeat): the proxy's
        answer; None when the tunnel is down (the node then beats over HTTPS)."""
        conn = self.conn
        if conn is None or not self.connected:
            return None
        return await beat_through(conn)

    async def wait_up(self) -> None:
        """Until the tunnel is up (at once when it is)."""
        await self._up.wait()

    async def wait_connected(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await self._up.wait()

    async def stop(self) -> None:
        # The flag as well as the cancellation: a cancellation lost inside a library
        # call must not leave the loop dialing with stop() waiting for it forever.
        self._stopping = True
        await cancel_and_wait(self._task)
        self._task = None
        await self._close()
        if isinstance(self.locator, ProxyLocator):
            await self.locator.aclose()

    # the loop

    async def _run(self) -> None:
        while not self._stopping:
            up_at: float | None = None
            try:
                up_at = await self._session()
            except asyncio.CancelledError:
                raise
            except AccessDenied as exc:  # loud: this will not fix itself by retrying
                self.last_error = exc.message
                log.error("tunnel to the proxy refused: %s", exc.message)
            except (LimenError, OSError, asyncssh.Error, TimeoutError) as exc:
                self.last_error = _describe(exc)
                log.warning("tunnel to the proxy is down: %s", self.last_error)
            except Exception as exc:  # never let the agent die: the node would vanish
                self.last_error = repr(exc)
                log.exception("tunnel agent failed; retrying")
            finally:
                self._up.clear()
                self.connected_since = None
                await self._close()
            if self._stopping:
                return
            if up_at is not None and time.monotonic() - up_at >= STABLE_SECONDS:
                self.backoff.reset()
            await asyncio.sleep(self.backoff.next())

    async def _session(self) -> float:
        """One connection: dial, log in, offer the node, and wait until it ends."""
        target = await self._locate()
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can lose a cancellation
        # that arrives as the connection completes, and stop() would then wait forever
        # for a loop that goes on dialing.
        async with asyncio.timeout(self.connect_timeout):
            conn = await self._connect(target)
        self.conn = conn
        keep_alive(conn.get_extra_info("socket"))
        if target.host_key is not None:
            offered = conn.get_server_host_key()
            if offered is None or offered.public_data != target.host_key.public_data:
                if isinstance(self._locate, ProxyLocator) and self._locate.reused:
                    self._locate.doubt()  # the proxy may have a new key: ask it
                    raise ConnectionProblem(
                        f"the tunnel server at {target} has a host key other than the "
                        "one the proxy published last time; asking the proxy again")
                raise AccessDenied(
                    f"the tunnel server at {target} is not the proxy the cluster names "
                    "(its host key differs from the one /v1/ping published)"
                )
        try:
            await self._serve(conn)
        except asyncssh.ChannelListenError as exc:
            raise AccessDenied(
                f"the proxy would not take this node's tunnel ({exc}); see its audit log"
            ) from None
        if self._serve_socket is not None:
            await self._offer_data(conn, target, self._serve_socket)
        up_at = time.monotonic()
        self.connects += 1
        self.connected_since = self.clock.now()
        self.last_error = ""
        self._up.set()
        if isinstance(self._locate, ProxyLocator):
            self._locate.served()
        log.info("tunnel to %s is up", target)
        if self._on_connected is not None:
            try:
                await self._on_connected()
            except Exception as exc:  # noqa: BLE001 - a heartbeat can fail; the tunnel stands
                log.warning("after connecting the tunnel: %s", exc)
        await conn.wait_closed()
        return up_at

    async def _offer_data(self, conn: asyncssh.SSHClientConnection, target: TunnelTarget,
                          serve_socket: ServeSocket) -> None:
        """Offer data connections; a proxy that takes none gets sessions in the tunnel."""
        self.dialer = None
        dialer = DataDialer(target, serve_socket)
        try:
            await conn.start_server(dialer.handler, self.identity.node_id, DATA_PORT)
        except asyncssh.ChannelListenError:
            log.info("the proxy at %s takes no data connections: sessions cross the "
                     "tunnel itself", target)
            return
        self.dialer = dialer

    async def _connect(self, target: TunnelTarget) -> asyncssh.SSHClientConnection:
        ident = self.identity
        return await asyncssh.connect(
            target.host, target.port,
            tunnel=TLSTunnel(target.tls_ca, ALPN_TUNNEL) if target.tls_ca else None,
            username=ident.node_id,
            client_keys=[(ident.host_key, ident.host_cert)],
            known_hosts=host_ca_known_hosts(ident.host_ca),
            # The proxy's certificate names it "proxy"; which address this node
            # reached it by does not matter (the host key pin in _session does).
            host_key_alias="proxy",
            agent_path=None,
            config=[],  # no ~/.ssh/config on the node decides anything here
            preferred_auth="publickey",
            keepalive_interval=self.keepalive_interval,
            keepalive_count_max=self.keepalive_count_max,
            **tunnel_algs(),
        )

    async def _close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):  # (not wait_for: see _session)
                    await conn.wait_closed()


def tunnel_algs() -> dict[str, Any]:
    """The hardened algorithms (AES-GCM first: every session through a tunnel is
    encrypted twice, and AES-GCM is the cheap one in asyncssh; see sshalgs), with
    certificates first among host keys: the proxy proves itself through the cluster's
    host CA."""
    options = hardened_options()
    options["server_host_key_algs"] = HOST_KEY_ALGS
    return options


def _describe(exc: BaseException) -> str:
    if isinstance(exc, LimenError):
        return exc.message
    if isinstance(exc, TimeoutError):
        return "the proxy did not answer in time"
    if isinstance(exc, asyncssh.PermissionDenied):
        return "the proxy refused this node's host certificate"
    return str(exc) or type(exc).__name__

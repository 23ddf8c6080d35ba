"""One port for everything: TLS routed by ALPN, plain SSH recognised by its banner.

Each accepted connection's first bytes are peeked (read with MSG_PEEK, so nothing is
consumed), then the socket is handed to asyncio with the right protocol:

- ``SSH-2.0-...``                     -> the SSH jump host, as plain SSH;
- ``LIMEN-DATA ...``                  -> a tunneled node's data connection (plain TCP,
  limen.tunnel.data_link), which the tunnel server's gate admits or closes;
- a TLS ClientHello (first byte 0x16) -> TLS, then by the negotiated ALPN:
  ``limen-ssh`` -> jump host, ``limen-node`` -> a direct connection to a node
  (proxy.ssh_direct), ``limen-tunnel`` -> tunnel server, anything else -> HTTPS.

SNI only selects the certificate (there is one); any name or none is accepted.
Slow or silent clients are dropped after a handshake timeout; garbage is closed with a
log line. Connection counts per source address are bounded.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from limen.tasks import cancel_and_wait
from limen.tls_direct import ALPN_NODE
from limen.tunnel.data_link import looks_like_data

log = logging.getLogger(__name__)

ALPN_HTTP = "http/1.1"
ALPN_SSH = "limen-ssh"
ALPN_TUNNEL = "limen-tunnel"
TLS_HANDSHAKE = 0x16
PEEK_BYTES = 8

ProtocolFactory = Callable[[], asyncio.BaseProtocol]
DataRoute = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
DATA_READ_LIMIT = 1024 * 1024  # as a direct node's stream (proxy.ssh_routes.STREAM_LIMIT)

# How much ciphertext asyncio's TLS layer reads at once, by ALPN. Its default, 256 KiB,
# is allocated (and zero-filled, so resident) for every TLS connection: with thousands
# of tunneled nodes, each holding a tunnel and an HTTPS connection, that alone was
# half a megabyte per node. Bulk SSH inside TLS keeps the default; a tunnel reads
# 64 KiB at a time (four full TLS records), the HTTPS API 32 KiB.
TLS_READ_SIZE = {ALPN_SSH: 256 * 1024, ALPN_NODE: 256 * 1024, ALPN_TUNNEL: 64 * 1024}
TLS_READ_SIZE_HTTP = 32 * 1024


@dataclass
class ListenerLimits:
    handshake_timeout: float = 5.0
    max_connections_per_ip: int = 1000
    max_handshakes_per_ip: int = 256
    max_handshakes: int = 128  # from all addresses together

# A herd turned away is logged once a while, with how many, not once a connection.
TURNED_AWAY_LOG_SECONDS = 10.0
# Beyond max_handshakes, addresses with nothing in progress are still taken, up to this
# many times the bound (see MultiplexListener._over_bound).
FIRST_HANDSHAKES = 4


@dataclass
class Routes:
    http: ProtocolFactory
    ssh: ProtocolFactory | None = None
    tunnel: ProtocolFactory | None = None
    node: ProtocolFactory | None = None  # direct connections to nodes (proxy.ssh_direct)
    data: DataRoute | None = None  # tunneled nodes' data connections (tunnel.data_gate)


class _ALPNSwitch(asyncio.Protocol):
    """Lives only for the instant after the TLS handshake: picks the real protocol."""

    def __init__(self, routes: Routes, on_close: Callable[[], None]) -> None:
        self.routes = routes
        self.on_close = on_close

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object else None
        by_alpn = {ALPN_SSH: self.routes.ssh, ALPN_NODE: self.routes.node,
                   ALPN_TUNNEL: self.routes.tunnel}
        factory = by_alpn.get(alpn or "") or self.routes.http
        protocol = factory()
        _on_close(protocol, self.on_close)
        _shrink_tls_buffer(transport, TLS_READ_SIZE.get(alpn or "", TLS_READ_SIZE_HTTP))
        transport.set_protocol(protocol)
        # Only HTTP hands its connection on (to a WebSocket); SSH keeps the bare transport.
        seen = transport if factory is not self.routes.http else _UpgradeWatch(transport,
                                                                               self.on_close)
        protocol.connection_made(seen)

    def connection_lost(self, exc: Exception | None) -> None:  # closed before switching
        self.on_close()


def _shrink_tls_buffer(transport: asyncio.BaseTransport, size: int) -> None:
    """Give the connection's asyncio SSLProtocol a read buffer of ``size`` bytes.

    asyncio offers no parameter for it (SSLProtocol.max_size, a class attribute, and
    the buffer made in its constructor), so this reaches into the transport; on a
    Python whose internals differ it leaves the default, which is only bigger. uvloop's
    TLS needs none of this: its 256 KiB buffer is allocated without being filled, so
    only the pages a connection's reads reach become resident."""
    tls = getattr(transport, "_ssl_protocol", None)
    if tls is None or not isinstance(getattr(tls, "_ssl_buffer", None), bytearray):
        return
    if len(tls._ssl_buffer) > size:
        tls.max_size = size
        tls._ssl_buffer = bytearray(size)
        tls._ssl_buffer_view = memoryview(tls._ssl_buffer)


@dataclass
class MultiplexListener:
    sock: socket.socket
    tls: ssl.SSLContext
    routes: Routes
    limits: ListenerLimits = field(default_factory=ListenerLimits)
    _task: asyncio.Task[None] | None = None
    _pending: set[asyncio.Task[None]] = field(default_factory=set)
    _open: Counter[str] = field(default_factory=Counter)
    _handshaking: Counter[str] = field(default_factory=Counter)
    handshakes: int = 0  # in progress, from all addresses
    turned_away: int = 0  # connections closed at once because handshakes were at the bound
    _turned_away_logged: tuple[float, int] = (float("-inf"), 0)  # (when, the count then)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    async def start(self) -> None:
        self.sock.setblocking(False)
        self._task = asyncio.create_task(self._accept_loop())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        self.sock.close()

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, addr = await loop.sock_accept(self.sock)
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            peer = str(addr[0])
            if self._open[peer] >= self.limits.max_connections_per_ip:
                log.warning("refusing %s: %d connections open (limit)", peer, self._open[peer])
                conn.close()
                continue
            if self._handshaking[peer] >= self.limits.max_handshakes_per_ip:
                log.warning("refusing %s: %d unfinished handshakes (limit)", peer,
                            self._handshaking[peer])
                conn.close()
                continue
            if self._over_bound(peer):
                conn.close()
                self._turn_away(loop.time())
                continue
            # Counted here, not in the task: the next accept must see them.
            self.handshakes += 1
            self._handshaking[peer] += 1
            self._open[peer] += 1
            task = asyncio.create_task(self._route(conn, peer))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def _over_bound(self, peer: str) -> bool:
        """Whether to close a new connection at once, the handshakes in progress being
        at the bound. An address's first handshake is still taken (up to four times the
        bound): else whoever holds the bound with silent connections, from one address
        or a few, would lock everyone else out for as long as they held it."""
        bound = self.limits.max_handshakes
        if self.handshakes < bound:
            return False
        return self._handshaking[peer] > 0 or self.handshakes >= FIRST_HANDSHAKES * bound

    def _turn_away(self, now: float) -> None:
        self.turned_away += 1
        since, count = self._turned_away_logged
        if now - since >= TURNED_AWAY_LOG_SECONDS:
            log.warning("%d handshakes in progress (the limit): closed %d new connections "
                        "at once since the last such line; they will try again",
                        self.handshakes, self.turned_away - count)
            self._turned_away_logged = (now, self.turned_away)

    async def _route(self, conn: socket.socket, peer: str) -> None:
        closed = False

        def on_close() -> None:
            nonlocal closed
            if not closed:
                closed = True
                self._decrement(self._open, peer)

        try:
            await self._hand_over(conn, peer, on_close)
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
            log.info("dropping connection from %s: %s", peer, exc or type(exc).__name__)
            conn.close()
            on_close()
        finally:
            self._decrement(self._handshaking, peer)
            self.handshakes -= 1

    @staticmethod
    def _decrement(counter: Counter[str], peer: str) -> None:
        counter[peer] -= 1
        if counter[peer] <= 0:
            del counter[peer]

    async def _hand_over(self, conn: socket.socket, peer: str,
                         on_close: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        conn.setblocking(False)
        async with asyncio.timeout(self.limits.handshake_timeout):
            first = await _peek(loop, conn)
        if first.startswith(b"SSH-") and self.routes.ssh is not None:
            ssh_factory = self.routes.ssh

            def ssh_protocol() -> asyncio.BaseProtocol:
                protocol = ssh_factory()
                _on_close(protocol, on_close)
                return protocol

            await loop.connect_accepted_socket(ssh_protocol, conn)
        elif looks_like_data(first) and self.routes.data is not None:
            await self._data(loop, conn, self.routes.data, on_close)
        elif first[:1] == bytes([TLS_HANDSHAKE]):
            await loop.connect_accepted_socket(
                lambda: _ALPNSwitch(self.routes, on_close), conn, ssl=self.tls,
                ssl_handshake_timeout=self.limits.handshake_timeout,
            )
        else:
            log.warning("closing connection from %s: not TLS and not SSH (%r)", peer, first[:8])
            conn.close()
            on_close()

    @staticmethod
    async def _data(loop: asyncio.AbstractEventLoop, conn: socket.socket, route: DataRoute,
                    on_close: Callable[[], None]) -> None:
        """A data connection: its first line is read (and judged) within the handshake's
        bounds, as a TLS or SSH handshake is."""
        reader = asyncio.StreamReader(limit=DATA_READ_LIMIT)

        def data_protocol() -> asyncio.BaseProtocol:
            protocol = asyncio.StreamReaderProtocol(reader)
            _on_close(protocol, on_close)
            return protocol

        transport, protocol = await loop.connect_accepted_socket(data_protocol, conn)
        assert isinstance(protocol, asyncio.StreamReaderProtocol)
        await route(reader, asyncio.StreamWriter(transport, protocol, reader, loop))


async def _peek(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> bytes:
    """The first bytes the client sent, left in the socket for whoever reads next."""
    while True:
        ready = loop.create_future()

        def wake(ready: asyncio.Future[None] = ready) -> None:
            # The reader can fire once more after the wait ended: when the handshake
            # timeout cancelled it in the same loop turn as the bytes came, or before the
            # waiting task resumed to remove the reader. Setting a done future again would
            # log an InvalidStateError (hundreds, under a herd of reconnecting nodes).
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(conn.fileno(), wake)
        try:
            await ready
        finally:
            loop.remove_reader(conn.fileno())
        data = conn.recv(PEEK_BYTES, socket.MSG_PEEK)
        if not data:
            raise ConnectionError("closed before sending anything")
        # A ClientHello's first byte or an SSH banner's first four are enough to route.
        if len(data) >= 4 or data[:1] == bytes([TLS_HANDSHAKE]):
            return data
        await asyncio.sleep(0.01)  # the rest of "SSH-" is still on its way


def _on_close(protocol: asyncio.BaseProtocol, callback: Callable[[], None]) -> None:
    """Run `callback` once the protocol's connection is lost (to keep counts right)."""
    original = protocol.connection_lost

    def connection_lost(exc: Exception | None) -> None:
        try:
            original(exc)
        finally:
            callback()

    protocol.connection_lost = connection_lost  # type: ignore[method-assign]


class _UpgradeWatch:
    """The transport as an HTTP protocol sees it. A connection upgraded to another
    protocol (HTTP to WebSocket) hands the transport to that protocol, whose end must be
    counted too (``callback`` runs once in all).

    A stand-in rather than a patched ``set_protocol``: uvloop's transports are C types
    whose methods cannot be replaced. Everything else goes to the real transport."""

    def __init__(self, transport: asyncio.BaseTransport, callback: Callable[[], None]) -> None:
        self._transport = transport
        self._callback = callback

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        _on_close(protocol, self._callback)
        self._transport.set_protocol(protocol)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def server_tls_context(certfile: str, keyfile: str, alpn: list[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile)
    ctx.set_alpn_protocols(alpn)
    return ctx

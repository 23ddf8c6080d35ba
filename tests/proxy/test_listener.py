"""The multiplexed listener routes by banner and ALPN, and survives bad clients."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvloop
from cryptography.hazmat.primitives import serialization

from limen.auth.ca import generate_tls_ca, issue_tls_server_cert
from limen.proxy.https import bind
from limen.proxy.listener import (
    ListenerLimits,
    MultiplexListener,
    Routes,
    _peek,
    server_tls_context,
)


class Tagger(asyncio.Protocol):
    """Answers every chunk with its route's tag, so the test sees where it landed."""

    def __init__(self, tag: bytes) -> None:
        self.tag = tag

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(self.tag + data)  # type: ignore[attr-defined]


def _server_tls(tmp_path: Path) -> tuple[ssl.SSLContext, str]:
    """The listener's TLS context, with a server certificate from a fresh CA (its PEM)."""
    now = datetime.now(UTC)
    ca_key, ca_cert = generate_tls_ca("mux.test", now=now)
    key, cert = issue_tls_server_cert(ca_key, ca_cert, names=["localhost"], ips=["127.0.0.1"],
                                      now=now)
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    tls = server_tls_context(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"),
                             ["http/1.1", "limen-ssh", "limen-tunnel"])
    return tls, ca_cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture
async def listener(tmp_path: Path) -> AsyncIterator[tuple[MultiplexListener, str]]:
    tls, ca_pem = _server_tls(tmp_path)
    routes = Routes(http=lambda: Tagger(b"HTTP:"), ssh=lambda: Tagger(b"SSH:"),
                    tunnel=lambda: Tagger(b"TUNNEL:"))
    mux = MultiplexListener(bind("127.0.0.1", 0), tls, routes,
                            ListenerLimits(handshake_timeout=0.5))
    await mux.start()
    yield mux, ca_pem
    await mux.stop()


def _client_tls(ca_pem: str, alpn: list[str] | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_pem)
    ctx.check_hostname = False
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


async def _ask(port: int, payload: bytes, tls: ssl.SSLContext | None = None,
               sni: str | None = None, source: str | None = None) -> bytes:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=tls, server_hostname=sni if tls else None,
        local_addr=(source, 0) if source else None)
    try:
        writer.write(payload)
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read(100)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_plain_ssh_banner_goes_to_the_jump_host(listener) -> None:
    mux, _ = listener
    assert await _ask(mux.port, b"SSH-2.0-OpenSSH_9.2\r\n") == b"SSH:SSH-2.0-OpenSSH_9.2\r\n"


@pytest.mark.parametrize(
    ("alpn", "tag"),
    [(["limen-ssh"], b"SSH:"), (["limen-tunnel"], b"TUNNEL:"), (["http/1.1"], b"HTTP:"),
     (None, b"HTTP:"), (["h2", "http/1.1"], b"HTTP:"), (["spdy/3"], b"HTTP:")],
)
async def test_tls_is_routed_by_alpn(listener, alpn: list[str] | None, tag: bytes) -> None:
    mux, ca = listener
    ctx = _client_tls(ca, alpn)  # an ALPN we do not serve: none is picked, HTTP gets it
    assert await _ask(mux.port, b"hello", ctx, sni="anything.example") == tag + b"hello"


async def test_no_sni_is_fine(listener) -> None:
    mux, ca = listener
    reader, writer = await asyncio.open_connection("127.0.0.1", mux.port,
                                                   ssl=_client_tls(ca, ["limen-ssh"]),
                                                   server_hostname="")
    writer.write(b"x")
    async with asyncio.timeout(5):
        assert await reader.read(100) == b"SSH:x"
    writer.close()
    await writer.wait_closed()


async def test_http2_is_not_offered(listener) -> None:
    mux, ca = listener
    reader, writer = await asyncio.open_connection("127.0.0.1", mux.port,
                                                   ssl=_client_tls(ca, ["h2"]),
                                                   server_hostname="x")
    assert writer.get_extra_info("ssl_object").selected_alpn_protocol() is None
    writer.close()
    await writer.wait_closed()


async def test_a_silent_client_is_dropped_after_the_handshake_timeout(listener) -> None:
    mux, _ = listener
    reader, writer = await asyncio.open_connection("127.0.0.1", mux.port)
    async with asyncio.timeout(5):
        assert await reader.read(100) == b""  # closed by the server, nothing sent
    writer.close()
    await writer.wait_closed()


async def test_garbage_is_closed_and_others_are_still_served(listener) -> None:
    mux, _ = listener
    reader, writer = await asyncio.open_connection("127.0.0.1", mux.port)
    writer.write(b"GARBAGE GARBAGE\r\n")
    await writer.drain()
    async with asyncio.timeout(5):
        # Closed with unread bytes: the kernel may send a reset, which is fine.
        with contextlib.suppress(ConnectionResetError):
            assert await reader.read(100) == b""
    writer.close()
    assert await _ask(mux.port, b"SSH-2.0-x\r\n") == b"SSH:SSH-2.0-x\r\n"


async def test_the_connection_limit_per_address_bites(tmp_path: Path, listener) -> None:
    mux, _ = listener
    mux.limits.max_connections_per_ip = 2
    held = [await asyncio.open_connection("127.0.0.1", mux.port) for _ in range(2)]
    for _reader, writer in held:
        writer.write(b"SSH-2.0-held\r\n")
        await writer.drain()
    async with asyncio.timeout(5):
        for reader, _writer in held:
            assert (await reader.read(100)).startswith(b"SSH:")
    reader, writer = await asyncio.open_connection("127.0.0.1", mux.port)
    async with asyncio.timeout(5):
        assert await reader.read(100) == b""  # refused at once
    writer.close()
    for _reader, w in held:
        w.close()
        await w.wait_closed()


async def test_the_bound_on_handshakes_from_all_addresses_turns_newcomers_away(
        listener, caplog: pytest.LogCaptureFixture) -> None:
    """A herd (every node of a restarted proxy at once) is taken a bounded number at a
    time: the rest are closed at once, to try again, while the first ones finish."""
    mux, ca_pem = listener
    mux.limits.max_handshakes = 2
    mux.limits.handshake_timeout = 60  # the silent ones stay until they leave
    silent = [await asyncio.open_connection("127.0.0.1", mux.port) for _ in range(2)]
    async with asyncio.timeout(5):
        while mux.handshakes < 2:  # both taken, waiting for their first bytes
            await asyncio.sleep(0.01)
    newcomer, writer = await asyncio.open_connection("127.0.0.1", mux.port)
    async with asyncio.timeout(5):
        assert await newcomer.read(100) == b""  # closed at once, not held
    writer.close()
    assert mux.turned_away == 1
    assert "2 handshakes in progress (the limit): closed 1 new connections" in caplog.text
    for _reader, w in silent:  # they leave: their places are free again
        w.close()
    async with asyncio.timeout(5):
        while mux.handshakes:
            await asyncio.sleep(0.01)
    assert await _ask(mux.port, b"x", _client_tls(ca_pem, ["limen-ssh"])) == b"SSH:x"


async def test_one_address_holding_the_bound_does_not_lock_others_out(listener) -> None:
    """The attack on that bound: fill it with silent connections from one address (or a
    few) so that nobody else gets in. Another address's first handshake is still taken,
    up to four times the bound; only past that is it turned away too."""
    mux, ca_pem = listener
    mux.limits.max_handshakes = 2
    mux.limits.handshake_timeout = 60  # held for the whole test
    held = [await asyncio.open_connection("127.0.0.1", mux.port) for _ in range(2)]
    try:
        async with asyncio.timeout(5):
            while mux.handshakes < 2:
                await asyncio.sleep(0.01)
        tls = _client_tls(ca_pem, ["limen-ssh"])
        assert await _ask(mux.port, b"x", tls, source="127.0.0.2") == b"SSH:x"
        # Six more addresses, one silent connection each: four times the bound in all.
        for last in range(3, 9):
            held.append(await asyncio.open_connection("127.0.0.1", mux.port,
                                                      local_addr=(f"127.0.0.{last}", 0)))
        async with asyncio.timeout(5):
            while mux.handshakes < 8:
                await asyncio.sleep(0.01)
        held.append(await asyncio.open_connection("127.0.0.1", mux.port,
                                                  local_addr=("127.0.0.9", 0)))
        async with asyncio.timeout(5):
            assert await held[-1][0].read(100) == b""  # past four times the bound
    finally:
        for _reader, writer in held:
            writer.close()


class Upgrader(Tagger):
    """Hands the connection to another protocol on its first bytes, as HTTP does when a
    request upgrades to a WebSocket."""

    def data_received(self, data: bytes) -> None:
        upgraded = Tagger(b"UPGRADED:")
        upgraded.connection_made(self.transport)
        self.transport.set_protocol(upgraded)  # type: ignore[attr-defined]
        upgraded.data_received(data)


async def test_an_upgraded_connection_is_uncounted_when_it_ends(listener) -> None:
    """Else every WebSocket would hold one of its address's connections for good."""
    mux, ca_pem = listener
    mux.routes.http = lambda: Upgrader(b"HTTP:")
    assert await _ask(mux.port, b"x", _client_tls(ca_pem, ["http/1.1"])) == b"UPGRADED:x"
    async with asyncio.timeout(5):
        while mux._open:  # the per-address count of open connections
            await asyncio.sleep(0.01)


@pytest.mark.parametrize(("alpn", "size"), [
    (["limen-tunnel"], 64 * 1024), (["http/1.1"], 32 * 1024), (None, 32 * 1024),
    (["limen-ssh"], 256 * 1024),
])
async def test_tls_read_buffer_is_sized_by_route(tmp_path: Path, alpn: list[str] | None,
                                                 size: int) -> None:
    """asyncio gives every TLS connection a 256 KiB read buffer, resident: thousands of
    tunnels and HTTPS connections keep a smaller one; bulk SSH inside TLS the default."""
    tls, ca_pem = _server_tls(tmp_path)
    seen: list[Tagger] = []

    def tagger() -> Tagger:
        seen.append(Tagger(b""))
        return seen[-1]

    mux = MultiplexListener(bind("127.0.0.1", 0), tls, Routes(http=tagger, ssh=tagger,
                                                             tunnel=tagger))
    await mux.start()
    try:
        payload = bytes(range(256)) * 1024  # more than any of the buffers
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", mux.port, ssl=_client_tls(ca_pem, alpn), server_hostname="localhost")
        writer.write(payload)
        async with asyncio.timeout(10):
            echoed = await reader.readexactly(len(payload))
        writer.close()
        assert echoed == payload
        server_tls = seen[0].transport._ssl_protocol  # type: ignore[attr-defined]
        assert (server_tls.max_size, len(server_tls._ssl_buffer)) == (size, size)
    finally:
        await mux.stop()


def test_on_uvloop_routes_hold_and_every_end_is_counted(tmp_path: Path) -> None:
    """`limen start` runs on uvloop, whose transports are C types (no method of theirs can
    be replaced): routing, and the count of an upgraded connection, must hold there too."""

    async def scenario() -> None:
        tls, ca_pem = _server_tls(tmp_path)
        routes = Routes(http=lambda: Upgrader(b"HTTP:"), ssh=lambda: Tagger(b"SSH:"),
                        tunnel=lambda: Tagger(b"TUNNEL:"))
        mux = MultiplexListener(bind("127.0.0.1", 0), tls, routes)
        await mux.start()
        try:
            assert await _ask(mux.port, b"SSH-2.0-x\r\n") == b"SSH:SSH-2.0-x\r\n"
            for alpn, tag in ((["limen-ssh"], b"SSH:"), (["limen-tunnel"], b"TUNNEL:"),
                              (["http/1.1"], b"UPGRADED:")):
                assert await _ask(mux.port, b"x", _client_tls(ca_pem, alpn)) == tag + b"x"
            async with asyncio.timeout(5):
                while mux._open:  # every connection ended, the upgraded one too
                    await asyncio.sleep(0.01)
        finally:
            await mux.stop()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop],
                         ids=["asyncio", "uvloop"])
def test_a_handshake_timeout_as_the_first_bytes_arrive_logs_no_error(loop_factory) -> None:
    """A herd of reconnecting nodes makes this common: the handshake timeout fires in the
    same loop turn as the client's first bytes. The wait is over; the bytes must not then
    wake it a second time (an InvalidStateError in the proxy's log, once per connection)."""

    async def peek_past_a_timeout(sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0):  # fires in the next turn, as the bytes are read
                await _peek(loop, sock)

    async def scenario() -> list[dict]:
        errors: list[dict] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
        pairs = [socket.socketpair() for _ in range(20)]
        try:
            for server, client in pairs:
                server.setblocking(False)
                client.send(b"\x16\x03\x01\x00")  # a ClientHello's first bytes, already there
            await asyncio.gather(*(peek_past_a_timeout(server) for server, _ in pairs))
            await asyncio.sleep(0.05)  # a few more turns: a stray wake-up would run in them
        finally:
            for server, client in pairs:
                server.close()
                client.close()
        return errors

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        assert runner.run(scenario()) == []

"""A node's link to the proxy says what went wrong when the proxy is there but silent.

After a proxy restart, under a herd of reconnecting nodes, the usual failure is a
timeout, and httpx's timeouts carry no message: the node's log used to read
"heartbeat failed: cannot reach the proxy at 127.0.0.1:3080: " with nothing after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization

from limen.auth.ca import generate_tls_ca, issue_tls_server_cert
from limen.errors import ConnectionProblem
from limen.node.cluster.link import RemoteLink


async def _hold(tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    yield f"127.0.0.1:{port}"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


@pytest.fixture
async def silent_proxy() -> AsyncIterator[str]:
    """Takes TCP connections and never says a word (no TLS handshake, no answer)."""
    async for addr in _hold():
        yield addr


CA_KEY, CA_CERT = generate_tls_ca("link.test", now=datetime.now(UTC))
CA_PEM = CA_CERT.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture
async def mute_proxy(tmp_path) -> AsyncIterator[str]:  # noqa: ANN001
    """Completes the TLS handshake as the cluster's proxy, then never answers."""
    key, cert = issue_tls_server_cert(CA_KEY, CA_CERT, names=["localhost"], ips=["127.0.0.1"],
                                      now=datetime.now(UTC))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    async for addr in _hold(tls):
        yield addr


async def _failures(link: RemoteLink) -> tuple[str, str]:
    """What a heartbeat and the access feed each say when they fail; closes the link."""
    try:
        with pytest.raises(ConnectionProblem) as beat:
            await link.heartbeat(None, "tunnel")
        with pytest.raises(ConnectionProblem) as feed:
            async with contextlib.aclosing(link.access_feed()) as messages:
                async for _ in messages:
                    pass
    finally:
        await link.close()
    return beat.value.message, feed.value.message


async def test_a_silent_proxy_is_named_as_such_for_calls_and_the_feed(silent_proxy: str) -> None:
    beat, feed = await _failures(
        RemoteLink(silent_proxy, CA_PEM, "a-token", timeout=0.3, connect_timeout=0.3))
    assert beat == (f"cannot reach the proxy at {silent_proxy}: it did not "
                    "take the connection in time (TLS handshake or TCP connect)")
    assert feed == ("cannot reach the proxy for the access feed: it did not "
                    "take the connection in time (TLS handshake or TCP connect)")


async def test_a_proxy_that_stops_answering_is_named_as_such(mute_proxy: str) -> None:
    beat, feed = await _failures(
        RemoteLink(mute_proxy, CA_PEM, "a-token", timeout=0.3, connect_timeout=10,
                   feed_read_timeout=0.3))
    assert beat == f"cannot reach the proxy at {mute_proxy}: it did not answer in time"
    assert feed == "the access feed broke: it did not answer in time"

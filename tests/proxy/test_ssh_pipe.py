"""The jump host driven by an asyncssh client: first bytes, half-close, failures, cert checks."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncssh
import pytest

from limen.client.ssh import client_algs, host_ca_known_hosts
from limen.clock import FakeClock
from limen.proxy.ssh_jump import NodeRoute
from tests.proxy.conftest import MakeJump
from tests.proxy.support import Pki, UserFiles

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def fake_node() -> AsyncIterator[Callable[[Handler], Awaitable[NodeRoute]]]:
    """Start small TCP servers that play a node; each becomes a route named 'fake'."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> NodeRoute:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return NodeRoute(node_id="id-fake", name="fake", host="127.0.0.1", port=port)

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def client(port: int, user: UserFiles, pki: Pki) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        "127.0.0.1", port, username="alice", client_keys=[(user.key, user.cert)],
        known_hosts=host_ca_known_hosts(pki.host_ca), agent_path=None, config=[],
        **client_algs(),
    )


async def test_node_banner_arrives_first_and_whole(
    make_jump: MakeJump, alice: UserFiles, pki: Pki
) -> None:
    jump = await make_jump()
    async with await client(jump.port, alice, pki) as conn:
        reader, writer = await conn.open_connection("node1", 22)
        banner = await asyncio.wait_for(reader.readline(), 10)
        assert banner.startswith(b"SSH-2.0-OpenSSH_")
        writer.close()


async def test_half_close_both_ways(
    make_jump: MakeJump, alice: UserFiles, pki: Pki, fake_node
) -> None:
    node_saw_eof = asyncio.Event()

    async def echo_then_bye(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # up to the client's EOF
        node_saw_eof.set()
        writer.write(data + b" bye")
        await writer.drain()
        writer.close()

    jump = await make_jump(routes=[await fake_node(echo_then_bye)])
    async with await client(jump.port, alice, pki) as conn:
        reader, writer = await conn.open_connection("fake", 0)
        writer.write(b"ping")
        writer.write_eof()
        await asyncio.wait_for(node_saw_eof.wait(), 10)
        assert await asyncio.wait_for(reader.read(), 10) == b"ping bye"
    end = await jump.recorder.wait_for("proxy.disconnect")
    assert (end["bytes_up"], end["bytes_down"], "error" in end) == (4, 8, False)


async def test_node_failure_closes_the_channel(
    make_jump: MakeJump, alice: UserFiles, pki: Pki, fake_node
) -> None:
    async def greet_and_reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        await writer.drain()
        await reader.readexactly(1)  # wait for the client's first byte, then fail hard:
        sock = writer.get_extra_info("socket")  # linger 0 makes close() send a reset
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    jump = await make_jump(routes=[await fake_node(greet_and_reset)])
    async with await client(jump.port, alice, pki) as conn:
        reader, writer = await conn.open_connection("fake", 22)
        assert await asyncio.wait_for(reader.readexactly(5), 10) == b"hello"
        writer.write(b"x")
        assert await asyncio.wait_for(reader.read(), 10) == b""
        await asyncio.wait_for(writer.channel.wait_closed(), 10)
    end = await jump.recorder.wait_for("proxy.disconnect")
    assert "error" in end


async def test_client_leaving_closes_the_node_stream(
    make_jump: MakeJump, alice: UserFiles, pki: Pki, fake_node
) -> None:
    node_closed = asyncio.Event()

    async def wait_for_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        node_closed.set()
        writer.close()

    jump = await make_jump(routes=[await fake_node(wait_for_close)])
    conn = await client(jump.port, alice, pki)
    await conn.open_connection("fake", 22)
    conn.close()  # no EOF first: the whole SSH connection goes
    await conn.wait_closed()
    await asyncio.wait_for(node_closed.wait(), 10)


async def test_source_address_in_the_certificate_is_enforced(
    make_jump: MakeJump, pki: Pki
) -> None:
    jump = await make_jump()
    key = asyncssh.generate_private_key("ssh-ed25519")
    cert = pki.user_ca.generate_user_certificate(
        key, "alice", principals=["alice"], source_address=["10.0.0.0/8"]
    )
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect(
            "127.0.0.1", jump.port, username="alice", client_keys=[(key, cert)],
            known_hosts=host_ca_known_hosts(pki.host_ca), agent_path=None, config=[],
            **client_algs(),
        )
    failure = await jump.recorder.wait_for("auth", success=False)
    assert "may not be used from 127.0.0.1" in failure["reason"]


async def test_clock_skew_between_issuer_and_proxy_is_named(make_jump: MakeJump, pki: Pki) -> None:
    # The issuer's clock runs an hour ahead: by the injected clock the certificate is
    # valid, by the wall clock asyncssh checks it is not valid yet.
    jump = await make_jump(clock=FakeClock(datetime.now(UTC) + timedelta(hours=1)))
    key = asyncssh.generate_private_key("ssh-ed25519")
    now = time.time()
    cert = pki.user_ca.generate_user_certificate(
        key, "alice", principals=["alice"], valid_after=now + 3000, valid_before=now + 9000
    )
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect(
            "127.0.0.1", jump.port, username="alice", client_keys=[(key, cert)],
            known_hosts=host_ca_known_hosts(pki.host_ca), agent_path=None, config=[],
            **client_algs(),
        )
    failure = await jump.recorder.wait_for("auth", success=False)
    assert "not valid yet by this server's clock" in failure["reason"]

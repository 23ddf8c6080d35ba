"""limen.sshpackets: no empty SSH_MSG_IGNORE before every packet (stock OpenSSH logs
each one it receives, ssh -vvv), and what a connection reads parsed a packet's size at a
time."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from asyncio.trsock import TransportSocket
from collections.abc import Iterator
from typing import Any

import asyncssh
import pytest
from asyncssh.connection import SSHConnection

from limen import sshpackets
from limen.sshalgs import hardened_options
from tests.node.conftest import Node


def test_the_node_sends_no_ignore_packets_to_a_stock_client(node: Node) -> None:
    """ssh -vvv logs each SSH_MSG_IGNORE it receives; asyncssh as it comes sends one
    before every packet after the key exchange (18 in this one)."""
    result = node.client().ssh("head -c 300000 /dev/zero", options=("-vvv",))
    assert result.returncode == 0 and result.stdout == bytes(300000), result.stderr[-2000:]
    assert b"receive packet: type" in result.stderr  # the log is at the level that shows it
    assert result.stderr.count(b"Received SSH2_MSG_IGNORE") == 0


def test_a_cbc_cipher_keeps_its_ignore_packets() -> None:
    """The packets guard CBC mode (RFC 4251, 9.3.1): with a CBC cipher they stay. The
    same exchange over CBC takes the client about twice the packets it takes over CTR."""
    hardened_options()  # installs the change, as every Limen endpoint does
    assert getattr(asyncssh.connection.SSHConnection.send_packet, sshpackets.MARK, False)

    async def packets_received(cipher: str) -> int:
        key = asyncssh.generate_private_key("ssh-ed25519")
        server = await asyncssh.listen(
            "127.0.0.1", 0, server_host_keys=[key], encryption_algs=[cipher],
            server_factory=_Open, process_factory=_exit_zero)
        port = server.sockets[0].getsockname()[1]
        try:
            async with asyncssh.connect(
                    "127.0.0.1", port, known_hosts=None, username="x",
                    encryption_algs=[cipher], client_keys=None, agent_path=None,
                    config=[], preferred_auth="none") as conn:
                before = conn._recv_seq  # asyncssh's count of packets received
                for _ in range(5):
                    await conn.run("true")
                return conn._recv_seq - before
        finally:
            server.close()

    cbc = asyncio.run(packets_received("aes128-cbc"))
    ctr = asyncio.run(packets_received("aes128-ctr"))
    assert cbc >= 1.8 * ctr, (cbc, ctr)


class _Open(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False  # no authentication: this test is about packets


def _exit_zero(process: asyncssh.SSHServerProcess) -> None:
    process.exit(0)


Read = tuple[int, list[int]]  # a read's size, and the sizes asyncssh's parser got of it


@pytest.fixture
def reads() -> Iterator[list[Read]]:
    """What connections read (as the transport hands it over), each with what asyncssh's
    own parser was given of it: spies on both sides of the installed wrapper."""
    hardened_options()
    installed = SSHConnection.data_received
    asyncssh_own = getattr(installed, "__wrapped__", installed)
    seen: list[Read] = []

    def parser(self: SSHConnection, data: bytes, datatype: Any = None) -> None:
        seen[-1][1].append(len(data))
        asyncssh_own(self, data, datatype)

    SSHConnection.data_received = parser  # type: ignore[method-assign]
    try:
        sshpackets.install_receive()
        wrapper = SSHConnection.data_received
        assert getattr(wrapper, sshpackets.MARK, False)

        def transport(self: SSHConnection, data: bytes, datatype: Any = None) -> None:
            seen.append((len(data), []))
            wrapper(self, data, datatype)

        setattr(transport, sshpackets.MARK, True)  # installed: hardened_options() keeps it
        SSHConnection.data_received = transport  # type: ignore[method-assign]
        yield seen
    finally:
        SSHConnection.data_received = installed  # type: ignore[method-assign]


def test_a_burst_is_parsed_a_packet_at_a_time_and_arrives_whole(reads: list[Read]) -> None:
    """The first megabyte of an upload reaches the server in one read, as a read through
    TLS can be 256 KiB (the client's bytes gathered on their way, then handed over
    together). asyncssh's parser gets it PIECE bytes at a time, smaller reads as they
    came, and every byte arrives, in order."""
    upload = os.urandom(3 * 1024 * 1024)
    burst = 1024 * 1024

    async def digest_on_server() -> str:
        key = asyncssh.generate_private_key("ssh-ed25519")
        servers: list[SSHConnection] = []
        server = await asyncssh.listen(
            "127.0.0.1", 0, server_host_keys=[key], encoding=None,
            server_factory=lambda: _Recorded(servers), process_factory=_digest_of_stdin,
            **hardened_options())
        port = server.sockets[0].getsockname()[1]
        try:
            async with (
                asyncssh.connect("127.0.0.1", port, known_hosts=None, username="x",
                                 client_keys=None, agent_path=None, config=[],
                                 preferred_auth="none", **hardened_options()) as conn,
                conn.create_process("digest", encoding=None) as process,
            ):
                gathered = _gathering(conn)
                process.stdin.write(upload[:burst])
                await process.stdin.drain()
                del conn._transport.write  # back to the socket
                servers[0].data_received(b"".join(gathered))  # one read
                process.stdin.write(upload[burst:])
                process.stdin.write_eof()
                return (await process.stdout.read()).decode()
        finally:
            server.close()

    assert asyncio.run(digest_on_server()) == hashlib.sha256(upload).hexdigest()
    assert max(size for size, _ in reads) > burst
    for size, parsed in reads:
        assert sum(parsed) == size
        if size > sshpackets.SPLIT_ABOVE:  # the burst, and any large read after it
            assert max(parsed) <= sshpackets.PIECE
        else:  # as it came
            assert parsed == [size]


def _gathering(conn: asyncssh.SSHClientConnection) -> list[bytes]:
    """What the client writes from now on, kept instead of sent."""
    gathered: list[bytes] = []
    conn._transport.write = gathered.append
    return gathered


class _Recorded(_Open):
    def __init__(self, connections: list[SSHConnection]) -> None:
        self.connections = connections

    def connection_made(self, conn: SSHConnection) -> None:
        self.connections.append(conn)


async def _digest_of_stdin(process: asyncssh.SSHServerProcess) -> None:
    digest = hashlib.sha256()
    while chunk := await process.stdin.read(1 << 20):
        digest.update(chunk)
    process.stdout.write(digest.hexdigest().encode())
    process.exit(0)


def test_a_server_acknowledges_each_handshake_read_at_once_until_login(
        node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stock ssh keeps Nagle's algorithm on through its handshake, so a small packet of
    its waits for the ACK of the one before; the server asks the kernel for that ACK at
    once (TCP_QUICKACK) after each read until the client has logged in, and not after:
    the session's reads, megabytes of them here, ask for none."""
    quick_acks: list[int] = []
    original = TransportSocket.setsockopt

    def spy(self: TransportSocket, level: int, name: int, value: Any) -> None:
        if (level, name) == (socket.IPPROTO_TCP, socket.TCP_QUICKACK):
            quick_acks.append(self.getsockname()[1])
        original(self, level, name, value)

    monkeypatch.setattr(TransportSocket, "setsockopt", spy)
    payload = os.urandom(4 * 1024 * 1024)
    result = node.client().ssh("sha256sum", input=payload)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[0].decode() == hashlib.sha256(payload).hexdigest()
    assert set(quick_acks) == {node.server.port}  # the server's side of the connection
    # The handshake's reads: banner, KEXINIT, key exchange, NEWKEYS, service request,
    # user auth; not the hundred or more reads of the session's 4 MiB.
    assert 4 <= len(quick_acks) <= 20, quick_acks

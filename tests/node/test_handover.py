"""The node serving SSH on connections it did not accept itself (proxy, reverse tunnel)."""

from __future__ import annotations

import asyncio
import socket
import subprocess

import asyncssh
import pytest

from limen.node import CertPolicy
from tests.node.conftest import Node


def ssh_port(node: Node, port: int, command: str = "echo via-$((40+2))") -> bytes:
    client = node.client()
    argv = client.ssh_argv("--", command)
    argv[argv.index(str(node.port))] = str(port)
    result = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_serve_a_stream(node: Node) -> None:
    async def listen() -> asyncio.Server:
        return await asyncio.start_server(node.server.serve_stream, "127.0.0.1", 0)

    relay = node.run(listen())
    try:
        assert ssh_port(node, relay.sockets[0].getsockname()[1]) == b"via-42\n"
    finally:
        relay.close()
        node.run(relay.wait_closed())


def test_serve_an_accepted_socket(node: Node) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)

    async def accept_and_serve() -> None:
        sock, _ = await asyncio.get_running_loop().sock_accept(listener)
        conn = await node.server.serve_socket(sock)
        await conn.wait_closed()

    served = asyncio.run_coroutine_threadsafe(accept_and_serve(), node.loop)
    try:
        assert ssh_port(node, listener.getsockname()[1]) == b"via-42\n"
        served.result(10)
    finally:
        listener.close()


class _TunnelServer(asyncssh.SSHServer):
    """A stand-in for the proxy's tunnel port: lets the agent in, honours tcpip-forward."""

    def begin_auth(self, username: str) -> bool:
        return False

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return True  # asyncssh listens here and sends each connection back as a channel


def test_serve_through_a_reverse_tunnel(node: Node) -> None:
    async def dial_out() -> tuple[asyncssh.SSHAcceptor, ...]:
        proxy = await asyncssh.listen(
            "127.0.0.1", 0, server_factory=_TunnelServer,
            server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        )
        tunnel = await asyncssh.connect("127.0.0.1", proxy.get_port(), known_hosts=None,
                                        username="agent")
        acceptor = await node.server.listen_on(tunnel, "127.0.0.1", 0)
        return proxy, tunnel, acceptor

    async def hang_up(proxy, tunnel, acceptor) -> None:
        acceptor.close()
        tunnel.close()
        await tunnel.wait_closed()
        proxy.close()
        await proxy.wait_closed()

    proxy, tunnel, acceptor = node.run(dial_out())
    try:
        assert ssh_port(node, acceptor.get_port()) == b"via-42\n"
    finally:
        node.run(hang_up(proxy, tunnel, acceptor))


def test_max_sessions_per_connection(node_factory) -> None:
    node = node_factory(lambda clock: CertPolicy(max_sessions=1, clock=clock))
    creds = node.creds()
    host_ca = node.pki.host_ca.export_public_key().decode().strip()

    async def two_sessions() -> str:
        async with asyncssh.connect(
            "127.0.0.1", node.port, username="root",
            client_keys=[(asyncssh.read_private_key(creds.key),
                          asyncssh.read_certificate(creds.cert))],
            known_hosts=asyncssh.import_known_hosts(f"@cert-authority * {host_ca}\n"),
        ) as conn:
            first = await conn.create_process("cat")
            with pytest.raises(asyncssh.ChannelOpenError) as refused:
                await conn.create_process("true")
            first.stdin.write_eof()
            await first.wait()
            again = await conn.run("echo third", check=True)  # the slot is free again
            assert again.stdout == "third\n"
            return refused.value.reason

    reason = node.run(two_sessions())
    assert reason == "you may have at most 1 sessions per connection"
    node.observer.wait_for("session.rejected", lambda f: f["reason"] == reason)


def test_login_grace_time(node_factory) -> None:
    node = node_factory(login_grace_time=0.5)
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
        received = b""
        while data := sock.recv(4096):  # the node hangs up on a client that never logs in
            received += data
    assert received.startswith(b"SSH-2.0-Limen")

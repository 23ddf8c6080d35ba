"""A lock or an expired certificate ends every channel and connection of that identity,
at the node and at the proxy: sessions, `ssh -L` forwards, the jump connection itself.

Attacks: keep a forward open through a lock; keep a jump connection (a ControlMaster of
sorts) open past the certificate's expiry and open new channels through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import asyncssh
import pexpect
import pytest

from tests.support.cluster import ClusterHarness, LimenUser
from tests.support.ports import free_port
from tests.support.ssh import ssh_config

FORWARDING_ROLE = (
    "  allow:\n    logins: [root]\n    node_labels: {'*': '*'}\n"
    "  options:\n    port_forwarding: true\n"
)


def _role_user(cluster: ClusterHarness, tmp_path: Path, name: str, body: str,
               *login_flags: str) -> tuple[LimenUser, Path]:
    doc = tmp_path / f"{name}.yaml"
    doc.write_text(f"kind: role\nversion: v7\nmetadata:\n  name: {name}-role\nspec:\n{body}")
    created = cluster.admin("create", "-f", str(doc))
    assert created.returncode == 0, created.stderr
    user = cluster.create_user(name, roles=f"{name}-role", logins="root")
    logged_in = cluster.login(user, *login_flags)
    assert logged_in.returncode == 0, logged_in.stderr
    return user, ssh_config(cluster, user)


@pytest.fixture
def echo_server() -> Iterator[int]:
    """A TCP echo server on 127.0.0.1 that keeps each connection open until its peer closes."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    server.close()



class Forward:
    """`ssh -N -L` through the proxy, and one TCP connection held open through it."""

    def __init__(self, config: Path, echo_port: int) -> None:
        self.local = free_port()
        self.proc = subprocess.Popen(
            ["ssh", "-F", str(config), "-N", "-L",
             f"127.0.0.1:{self.local}:127.0.0.1:{echo_port}", "root@node1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        )
        self.conn = self._connect()

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + 15
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", self.local), timeout=5)
            except ConnectionRefusedError:  # ssh is not listening yet
                assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
                assert time.monotonic() < deadline, "ssh -L never listened"
                time.sleep(0.05)
                continue
            conn.sendall(b"ping")
            assert conn.recv(16) == b"ping"
            return conn

    def wait_ended(self, timeout: float) -> None:
        """The ssh process exits and the held connection is closed, within ``timeout``."""
        self.proc.wait(timeout)
        self.conn.settimeout(timeout)
        with contextlib.suppress(ConnectionResetError):
            assert self.conn.recv(16) == b""

    def close(self) -> None:
        self.conn.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def _live(cluster: ClusterHarness, user: str) -> tuple[int, int]:
    """Connections of ``user`` at the jump host and at the node, right now."""
    jump = cluster.service.jump
    node = cluster.service.node
    assert jump is not None and node is not None and node.server is not None
    at_jump = sum(1 for c in list(jump.connections) if c.identity and c.identity.user == user)
    at_node = sum(1 for c in list(node.server.connections)
                  if c.identity and c.identity.user == user)
    return at_jump, at_node


def _wait_live(cluster: ClusterHarness, user: str, expected: tuple[int, int],
               timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (seen := _live(cluster, user)) != expected:
        assert time.monotonic() < deadline, f"{user}: {seen} connections, expected {expected}"
        time.sleep(0.05)


def test_a_lock_ends_forwards_and_the_jump_connection(
    cluster: ClusterHarness, tmp_path: Path, echo_server: int
) -> None:
    user, config = _role_user(cluster, tmp_path, "fwdlock", FORWARDING_ROLE)
    forward = Forward(config, echo_server)
    try:
        _wait_live(cluster, "fwdlock", (1, 1), 10)
        locked = cluster.admin("lock", "--user", "fwdlock", "--message", "incident 7",
                               "--format", "json")
        assert locked.returncode == 0, locked.stderr
        forward.wait_ended(5)
        _wait_live(cluster, "fwdlock", (0, 0), 5)
        assert forward.proc.stderr is not None
        assert "incident 7" in forward.proc.stderr.read()
    finally:
        forward.close()
        cluster.admin("rm", f"lock/{locked.json()['metadata']['name']}")


def test_a_node_lock_ends_channels_to_that_node_only(
    cluster: ClusterHarness, tmp_path: Path, echo_server: int
) -> None:
    user, config = _role_user(cluster, tmp_path, "nodefwd", FORWARDING_ROLE)
    forward = Forward(config, echo_server)
    locked = cluster.admin("lock", "--node", "node1", "--ttl", "1h", "--format", "json")
    try:
        assert locked.returncode == 0, locked.stderr
        forward.wait_ended(5)
        _wait_live(cluster, "nodefwd", (0, 0), 5)
    finally:
        forward.close()
        cluster.admin("rm", f"lock/{locked.json()['metadata']['name']}")


def test_expiry_ends_shells_forwards_and_the_jump_connection(
    fresh_cluster: ClusterHarness, tmp_path: Path, echo_server: int
) -> None:
    cluster = fresh_cluster
    user, config = _role_user(cluster, tmp_path, "shortlived", FORWARDING_ROLE + (
        "    disconnect_expired_cert: true\n"), "--ttl", "5m")
    forward = Forward(config, echo_server)
    shell = pexpect.spawn("ssh", ["-F", str(config), "-tt", "root@node1"], timeout=20,
                          encoding="utf-8")
    try:
        shell.sendline("echo READY-$((40+2))")
        shell.expect("READY-42")
        _wait_live(cluster, "shortlived", (2, 2), 10)
        cluster.clock.advance(timedelta(minutes=6))
        # Generous waits: a loaded CI machine, not the feature, sets how long these take.
        shell.expect("certificate expired", timeout=20)
        shell.expect(pexpect.EOF, timeout=20)
        forward.wait_ended(20)
        _wait_live(cluster, "shortlived", (0, 0), 20)
    finally:
        shell.close(force=True)
        forward.close()


async def _jump_connection(cluster: ClusterHarness,
                           user: LimenUser) -> asyncssh.SSHClientConnection:
    key_path = next((user.home / "keys").rglob(user.name))
    key = asyncssh.read_private_key(str(key_path))
    cert = asyncssh.read_certificate(f"{key_path}-cert.pub")
    host, port = cluster.ssh_addr.rsplit(":", 1)
    return await asyncssh.connect(
        host, int(port), username=user.name, client_keys=[(key, cert)], known_hosts=None,
        agent_path=None, config=[],
    )


def test_a_jump_connection_opens_no_channel_after_expiry(
    fresh_cluster: ClusterHarness, tmp_path: Path
) -> None:
    """Without disconnect_expired_cert the connection may stay, but it is no way in."""
    cluster = fresh_cluster
    user, _config = _role_user(cluster, tmp_path, "keeper", FORWARDING_ROLE, "--ttl", "5m")

    async def attack() -> str:
        conn = await _jump_connection(cluster, user)
        try:
            reader, writer = await conn.open_connection("node1", 22)  # allowed while valid
            assert (await reader.readline()).startswith(b"SSH-2.0-")
            writer.close()
            cluster.clock.advance(timedelta(minutes=6))
            with pytest.raises(asyncssh.ChannelOpenError) as refused:
                await conn.open_connection("node1", 22)
            return refused.value.reason
        finally:
            conn.close()

    reason = asyncio.run(attack())
    assert "certificate expired" in reason and "limen login" in reason
    refusal = cluster.events_of("proxy.connect", user="keeper", allowed=False)
    assert refusal and "certificate expired" in refusal[-1]["reason"]

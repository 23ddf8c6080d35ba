"""Port forwarding (ssh -L) and agent forwarding (ssh -A), each only when permitted."""

from __future__ import annotations

import os
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from limen.node import CertPolicy, SessionPermit
from tests.node.conftest import Node, SshClient
from tests.support.ports import free_port

BANNER = b"HELLO FROM TARGET\n"


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        # The target speaks first, like an SSH or SMTP server: those bytes must arrive.
        self.request.sendall(BANNER)
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()



class Tunnel:
    """``ssh -N -L`` in the background; usable once its local port accepts."""

    def __init__(self, client: SshClient, target_port: int) -> None:
        self.port = free_port()
        forward = f"{self.port}:127.0.0.1:{target_port}"
        self.proc = subprocess.Popen(
            client.ssh_argv(options=("-N", "-L", forward, "-o", "ExitOnForwardFailure=yes")),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 15
        while not self._listening():
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            assert time.monotonic() < deadline, "ssh -L never started listening"

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
        except OSError:
            return False
        return True

    def exchange(self, message: bytes) -> bytes:
        """Connect through the tunnel, send ``message``, return all that came back
        (nothing when ssh drops the connection because the node refused the channel)."""
        received = b""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            try:
                sock.sendall(message)
                sock.shutdown(socket.SHUT_WR)
                while data := sock.recv(65536):
                    received += data
            except OSError:
                pass
        return received

    def close(self) -> None:
        # SIGKILL: ssh 9.2 sometimes misses a SIGTERM that lands just before it polls.
        self.proc.kill()
        self.proc.communicate(timeout=10)


def test_local_forward_when_permitted(node: Node, echo_port: int) -> None:
    tunnel = Tunnel(node.client(), echo_port)
    try:
        big = os.urandom(2 * 1024 * 1024)
        assert tunnel.exchange(b"ping\n") == BANNER + b"ping\n"
        assert tunnel.exchange(big) == BANNER + big
    finally:
        tunnel.close()
    event = node.observer.wait_for("port", lambda f: f["allowed"])
    assert event["addr"] == f"127.0.0.1:{echo_port}" and event["kind"] == "direct-tcpip"


def test_local_forward_refused_without_certificate_permission(node: Node, echo_port: int) -> None:
    # asyncssh refuses the channel before any node hook runs: the certificate lacks
    # permit-port-forwarding, as OpenSSH's sshd would refuse it.
    tunnel = Tunnel(node.client(node.creds(port_forwarding=False)), echo_port)
    try:
        assert tunnel.exchange(b"ping\n") == b""
    finally:
        tunnel.close()


def test_local_forward_refused_by_policy_is_reported(node_factory, echo_port: int) -> None:
    class OnlyDatabases(CertPolicy):
        def permit_for(self, identity) -> SessionPermit:
            permit = super().permit_for(identity)
            permit.port_forwarding = ["db-*:5432"]
            return permit

    node = node_factory(lambda clock: OnlyDatabases(clock=clock))
    tunnel = Tunnel(node.client(), echo_port)
    try:
        assert tunnel.exchange(b"ping\n") == b""
    finally:
        tunnel.close()
    event = node.observer.wait_for("port", lambda f: not f["allowed"])
    assert event["addr"] == f"127.0.0.1:{echo_port}"
    assert "not allowed" in event["error"]


# -- agent forwarding ---------------------------------------------------------------------


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A running ssh-agent holding one key: (socket path, key fingerprint)."""
    sock = str(tmp_path / "agent.sock")
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        env = {**os.environ, "SSH_AUTH_SOCK": sock}
        deadline = time.monotonic() + 10
        # ssh-add -l exits 2 until the agent listens, then 1 (an empty agent).
        while subprocess.run(["ssh-add", "-l"], env=env, capture_output=True).returncode == 2:
            assert time.monotonic() < deadline, "ssh-agent did not start"
        key = asyncssh.generate_private_key("ssh-ed25519")
        key_path = tmp_path / "agent-key"
        key.write_private_key(str(key_path))
        os.chmod(key_path, 0o600)
        subprocess.run(["ssh-add", "-q", str(key_path)], env=env, check=True, capture_output=True)
        yield sock, key.get_fingerprint("sha256")
    finally:
        proc.terminate()
        proc.wait(10)


def forward_agent(sock: str) -> tuple[str, ...]:
    # ssh forwards only the agent it uses itself (IdentityAgent=none would disable -A);
    # IdentitiesOnly keeps the agent's key out of authentication.
    return ("-A", "-o", f"IdentityAgent={sock}")


def test_agent_forwarding_when_permitted(node: Node, agent, test_user) -> None:
    sock, fingerprint = agent
    client = node.client(login=test_user.pw_name)  # the socket must be handed to the user
    result = client.ssh('ssh-add -l; stat -c %U "$SSH_AUTH_SOCK"',
                        options=forward_agent(sock))
    assert result.returncode == 0, result.stderr
    assert fingerprint.encode() in result.stdout
    assert result.stdout.split()[-1].decode() == test_user.pw_name


def test_agent_forwarding_refused_without_certificate_permission(node: Node, agent) -> None:
    sock, _ = agent
    client = node.client(node.creds(agent_forwarding=False))
    result = client.ssh('echo "${SSH_AUTH_SOCK-unset}"; ssh-add -l',
                        options=forward_agent(sock))
    assert result.stdout.startswith(b"unset\n")
    assert result.returncode == 2  # ssh-add: cannot reach an agent


def test_agent_forwarding_refused_by_policy_is_reported(node_factory, agent) -> None:
    class NoAgents(CertPolicy):
        def permit_for(self, identity) -> SessionPermit:
            permit = super().permit_for(identity)
            permit.forward_agent = False
            return permit

    node = node_factory(lambda clock: NoAgents(clock=clock))
    sock, fingerprint = agent
    # Not in the environment, and not reachable by looking for asyncssh's socket either.
    probe = ('echo "${SSH_AUTH_SOCK-unset}"; for s in /tmp/asyncssh-*/agent; do '
             '[ -S "$s" ] && SSH_AUTH_SOCK="$s" ssh-add -l; done; true')
    result = node.client().ssh(probe, options=forward_agent(sock))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"unset\n")
    assert fingerprint.encode() not in result.stdout
    event = node.observer.wait_for("port", lambda f: f["kind"] == "agent")
    assert event["allowed"] is False


def test_remote_forward_refused_by_policy_is_reported(node_factory) -> None:
    class LocalOnly(CertPolicy):
        def permit_for(self, identity) -> SessionPermit:
            permit = super().permit_for(identity)
            permit.remote_forwarding = False
            return permit

    node = node_factory(lambda clock: LocalOnly(clock=clock))
    result = node.client().ssh("true", options=(
        "-R", "127.0.0.1:0:127.0.0.1:22", "-o", "ExitOnForwardFailure=yes",
    ))
    assert result.returncode == 255
    assert b"remote port forwarding failed" in result.stderr.lower()
    event = node.observer.wait_for("port", lambda f: f["kind"] == "remote-forward")
    assert event["allowed"] is False
    assert "remote port forwarding is not allowed" in event["error"]

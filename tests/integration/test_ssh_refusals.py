"""What must be refused: certificates from another CA, expired ones, ones without the
requested login (at the proxy and at the node itself), and port forwarding a role does
not permit. What is permitted must still work: -L with `limen ssh` and stock ssh.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest

from limen.resources import Role
from tests.support.cluster import ClusterHarness
from tests.support.ports import free_port
from tests.support.ssh_access import (
    LOCAL_LOGIN,
    NODE,
    SshUser,
    clean_env,
    ensure_local_user,
    new_user,
    sign_by_hand,
    unique,
    wait_until,
)


@pytest.fixture(scope="module", autouse=True)
def _local_account() -> None:
    ensure_local_user()


# certificates


def _refused(user: SshUser, config: Path, *argv: str) -> str:
    result = user.ssh(*argv, "echo should-not-run", config=config)
    assert result.returncode == 255, result.stdout
    assert b"should-not-run" not in result.stdout
    assert b"Permission denied" in result.stderr, result.stderr
    return result.stderr.decode()


def _node_port(cluster: ClusterHarness) -> str:
    assert cluster.service.node is not None and cluster.service.node.server is not None
    return str(cluster.service.node.server.port)


def test_certificate_from_another_ca_is_refused_by_proxy_and_node(
    cluster: ClusterHarness, tmp_path: Path
) -> None:
    alice = new_user(cluster, "otherca")
    stranger_ca = asyncssh.generate_private_key("ssh-ed25519")
    forged = sign_by_hand(tmp_path / "forged", stranger_ca, alice.name, ["root"])
    config = alice.config_with_identity(forged.key, forged.cert)
    _refused(alice, config, f"root@{NODE}")  # stops at the proxy
    _refused(alice, config, "-p", _node_port(cluster), "root@127.0.0.1")  # the node, direct
    ok = alice.ssh("-p", _node_port(cluster), "root@127.0.0.1", "echo direct")  # control
    assert ok.stdout == b"direct\n", ok.stderr


def test_expired_certificate_is_refused_by_proxy_and_node(
    cluster: ClusterHarness, tmp_path: Path
) -> None:
    alice = new_user(cluster, "expcert")
    past = datetime.now(UTC) - timedelta(hours=1)
    expired = sign_by_hand(tmp_path / "expired", cluster.service.auth.ctx.cas.user_ca,
                           alice.name, ["root"], valid_after=past - timedelta(hours=2),
                           valid_before=past)
    config = alice.config_with_identity(expired.key, expired.cert)
    _refused(alice, config, f"root@{NODE}")
    _refused(alice, config, "-p", _node_port(cluster), "root@127.0.0.1")
    # The node's refusal names whom the certificate claimed: a claim, not a fact.
    refusals = wait_until(
        lambda: cluster.events_of("auth", code="T3007W", claimed_user=alice.name),
        10, "refusal events")
    assert all(event["success"] is False for event in refusals)


def test_certificate_without_the_requested_login_is_refused_by_the_node(
    cluster: ClusterHarness, tmp_path: Path
) -> None:
    alice = new_user(cluster, "noprinc")
    narrow = sign_by_hand(tmp_path / "narrow", cluster.service.auth.ctx.cas.user_ca,
                          alice.name, [LOCAL_LOGIN])
    config = alice.config_with_identity(narrow.key, narrow.cert)
    jump = ["-J", f"{LOCAL_LOGIN}@{cluster.ssh_addr}"]  # the proxy accepts this principal
    works = alice.ssh(*jump, f"{LOCAL_LOGIN}@{NODE}", "id -un", config=config)
    assert works.stdout == f"{LOCAL_LOGIN}\n".encode(), works.stderr
    _refused(alice, config, *jump, f"root@{NODE}")
    refusal = wait_until(
        lambda: [e for e in cluster.events_of("auth", code="T3007W", claimed_user=alice.name)
                 if e.get("claimed_login") == "root" and e.get("server_hostname") == "node1"],
        10, "the node's refusal event",
    )
    assert refusal[0]["success"] is False


# port forwarding


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP echo server on 127.0.0.1 (the node is on this host, so it can reach it)."""

    class Echo(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            while data := self.request.recv(65536):
                self.request.sendall(data)

    socketserver.ThreadingTCPServer.daemon_threads = True
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield server.server_address[1]
        server.shutdown()
        thread.join(5)



def _exchange(port: int, payload: bytes) -> bytes:
    """Connect to the forwarded port, send, and read what comes back until EOF or 2 s."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # A refused forward may be closed by ssh before this writes: that is an answer
        # too (nothing comes back), not an error of the test.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        sock.settimeout(5)
        received = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
        return received


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Background:
    proc: subprocess.Popen[bytes]
    stderr: str = ""


@contextlib.contextmanager
def _running(argv: list[str], env: dict[str, str], port: int) -> Iterator[Background]:
    """A forwarding client in the background until the block ends (then Ctrl-C)."""
    run = Background(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, env=env))
    try:
        wait_until(lambda: run.proc.poll() is not None or _listening(port), 20,
                   f"the forwarded port {port}")
        yield run
    finally:
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGINT)
        try:
            _, err = run.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            run.proc.kill()
            _, err = run.proc.communicate()
        run.stderr = err.decode(errors="replace")


def _limen_forward(lport: int, rport: int) -> list[str]:
    # -N after the node, as ssh allows (options are read up to the command)
    return [sys.executable, "-m", "limen.cli.main", "ssh",
            "-L", f"{lport}:127.0.0.1:{rport}", "root@node1", "-N"]


def _no_forwarding_role(cluster: ClusterHarness) -> str:
    name = unique("nofwd")
    role = Role.model_validate({
        "metadata": {"name": name},
        "spec": {
            "allow": {"logins": ["{{internal.logins}}"], "node_labels": {"*": "*"}},
            "options": {"port_forwarding": False, "forward_agent": False},
        },
    })
    cluster.run(cluster.service.auth.ctx.stores.roles.create(role))
    return name


def test_port_forwarding_is_refused_when_the_role_does_not_permit_it(
    cluster: ClusterHarness, echo_port: int
) -> None:
    bob = new_user(cluster, "nofwd", roles=_no_forwarding_role(cluster), logins="root")
    assert bob.limen("ssh", "node1", "true").returncode == 0  # a shell is still fine

    refused = bob.limen("ssh", "-L", f"{free_port()}:127.0.0.1:{echo_port}", "node1", "true")
    assert refused.returncode == 255
    assert "port forwarding (-L) is not allowed" in refused.stderr

    lport = free_port()
    argv = bob.ssh_argv("-N", "-L", f"{lport}:127.0.0.1:{echo_port}", f"root@{NODE}")
    with _running(argv, clean_env(), lport) as run:
        assert _exchange(lport, b"ping") == b""  # the node refused the channel
    assert "administratively prohibited" in run.stderr, run.stderr


def test_port_forwarding_works_when_permitted(cluster: ClusterHarness, echo_port: int) -> None:
    alice = new_user(cluster, "fwd")  # the access role permits port forwarding
    lport = free_port()
    env = clean_env(LIMEN_HOME=str(alice.home))
    with _running(_limen_forward(lport, echo_port), env, lport):
        assert _exchange(lport, b"hello through limen") == b"hello through limen"
        assert _exchange(lport, b"x" * 300_000) == b"x" * 300_000

    lport = free_port()
    argv = alice.ssh_argv("-N", "-L", f"{lport}:127.0.0.1:{echo_port}", f"root@{NODE}")
    with _running(argv, clean_env(), lport):
        assert _exchange(lport, b"hello through ssh") == b"hello through ssh"
    ports = wait_until(
        lambda: [e for e in cluster.events_of("port", user=alice.name) if e["allowed"]], 10,
        "port events",
    )
    assert ports[0]["code"] == "T3003I" and ports[0]["addr"] == f"127.0.0.1:{echo_port}"

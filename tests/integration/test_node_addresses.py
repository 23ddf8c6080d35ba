"""Issue 10, hole 2: the proxy dialed whatever address a node reported.

A node that joined with a token claims, by its join and by its heartbeats, addresses that
are not its own: a link-local one (a metadata service), the proxy's own ports, another
node's, and a plain TCP service. Each is refused at the auth service or at the proxy
before any byte of the user's reaches it; the user is told why and the audit log says so.
The module's cluster allows loopback for nodes (they all run on this host), as an
operator would with proxy.node_networks; a cluster without it refuses loopback outright
and still reaches its own in-process node.
"""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import ClusterHarness, default_config
from tests.support.node_api import HandNode, error_of, joined_role, new_token
from tests.support.ssh_access import CLUSTER, SshUser, new_user, unique, wait_until
from tests.tunnel.kit import Relay

PROBE_BANNER = b"SSH-2.0-Limen_node_check"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHarness]:
    harness = ClusterHarness(tmp_path_factory.mktemp("addresses")).start()
    yield harness
    harness.stop()


@pytest.fixture(scope="module")
def alice(cluster: ClusterHarness) -> SshUser:
    return new_user(cluster, "addr", logins="root")


class Service(socketserver.ThreadingTCPServer):
    """An internal TCP service: records what every connection sent, answers like a web
    server would, and closes."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Record)
        self.received: list[bytes] = []

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _Record(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = self.request.recv(65536)
        self.server.received.append(data)  # type: ignore[attr-defined]
        self.request.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture
def service() -> Iterator[Service]:
    server = Service()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _refused_to_user(alice: SshUser, name: str, expected: str) -> None:
    """`limen ssh` and stock ssh are both refused, each telling the user why."""
    result = alice.limen("ssh", name, "echo should-not-run")
    assert result.returncode == 255, result.stdout
    assert "should-not-run" not in result.stdout
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    stock = alice.ssh(f"root@{name}.{CLUSTER}", "echo should-not-run")
    assert stock.returncode == 255 and b"should-not-run" not in stock.stdout
    assert expected.encode() in stock.stderr, stock.stderr


def _connect_refused(cluster: ClusterHarness, name: str, expected: str) -> None:
    def refused() -> list[dict]:
        return [e for e in cluster.events_of("proxy.connect", server_hostname=name)
                if e.get("allowed") is False and expected in e.get("reason", "")]

    wait_until(refused, 10, f"a proxy.connect failure for {name}")
    assert not [e for e in cluster.events_of("proxy.connect", server_hostname=name)
                if e.get("allowed") is True]


def test_a_link_local_address_is_refused_at_join_and_at_heartbeat(
    cluster: ClusterHarness, alice: SshUser
) -> None:
    claimer = HandNode(cluster, unique("metadata"))
    joined = claimer.try_join(new_token(cluster), addr="169.254.169.254:80")
    assert joined.status_code == 400
    assert "169.254.169.254 is a link-local address" in error_of(joined)
    assert cluster.events_of("instance.join", node_name=claimer.name, success=False)
    assert alice.limen("ssh", claimer.name, "true").returncode == 255  # never registered

    # Joined honestly (a tunnel node), it claims the address in a heartbeat instead.
    claimer.join(new_token(cluster))
    beat = claimer.heartbeat("169.254.169.254:80")
    assert beat.status_code == 400 and "link-local" in error_of(beat)
    refused = cluster.events_of("instance.heartbeat", server_id=claimer.node_id)
    assert refused and refused[0]["success"] is False
    assert refused[0]["server_addr"] == "169.254.169.254:80"
    presence = cluster.run(cluster.service.auth.nodes.presence_of(claimer.node_id))
    assert presence is not None and presence.spec.addr == ""  # unchanged: still a tunnel node


def test_the_proxys_own_ports_are_never_dialed(cluster: ClusterHarness, alice: SshUser) -> None:
    web_port = cluster.web_addr.rsplit(":", 1)[1]
    by_join = HandNode(cluster, unique("self-web"))
    by_join.join(new_token(cluster), addr=f"127.0.0.1:{web_port}")
    expected = "is one of the proxy's own listeners"
    _refused_to_user(alice, by_join.name, expected)
    _connect_refused(cluster, by_join.name, expected)

    ssh_port = cluster.ssh_addr.rsplit(":", 1)[1]
    by_beat = HandNode(cluster, unique("self"))
    by_beat.join(new_token(cluster))
    for port in (web_port, ssh_port):
        assert by_beat.heartbeat(f"127.0.0.1:{port}").status_code == 200  # loopback allowed
        _refused_to_user(alice, by_beat.name, expected)
    _connect_refused(cluster, by_beat.name, expected)


def test_another_nodes_address_does_not_make_a_node(
    cluster: ClusterHarness, alice: SshUser
) -> None:
    node1 = cluster.service.node
    assert node1 is not None and node1.server is not None and node1.identity is not None
    node1_addr = f"127.0.0.1:{node1.server.port}"
    impostor = HandNode(cluster, unique("impostor"))
    impostor.join(new_token(cluster), addr=node1_addr)
    expected = f"is {node1.identity.node_id}'s, not {impostor.node_id}'s"
    _refused_to_user(alice, impostor.name, expected)
    _connect_refused(cluster, impostor.name, "did not prove it is that node")

    by_beat = HandNode(cluster, unique("impostor"))
    by_beat.join(new_token(cluster))
    assert by_beat.heartbeat(node1_addr).status_code == 200
    _refused_to_user(alice, by_beat.name, "did not prove it is that node")
    # node1 itself saw no login of alice's: only the proxy's handshake reached it.
    assert not [e for e in cluster.events() if e.get("user") == alice.name
                and e.get("server_id") == node1.identity.node_id]


def test_a_plain_tcp_service_receives_no_byte_of_the_users(
    cluster: ClusterHarness, alice: SshUser, service: Service
) -> None:
    by_join = HandNode(cluster, unique("internal"))
    by_join.join(new_token(cluster), addr=service.addr)
    expected = "does not serve a Limen node's SSH"
    _refused_to_user(alice, by_join.name, expected)
    _connect_refused(cluster, by_join.name, expected)

    by_beat = HandNode(cluster, unique("internal"))
    by_beat.join(new_token(cluster))
    assert by_beat.heartbeat(service.addr).status_code == 200
    _refused_to_user(alice, by_beat.name, expected)
    # Every connection it got was the proxy's own check, which sends SSH's greeting and
    # nothing else: never the user's client (OpenSSH, or limen's asyncssh).
    assert service.received
    for data in service.received:
        assert data.startswith(PROBE_BANNER), data
        assert b"OpenSSH" not in data and alice.name.encode() not in data


def test_a_proven_address_is_checked_once_and_again_when_it_changes(
    cluster: ClusterHarness, alice: SshUser, tmp_path: Path
) -> None:
    role = joined_role(cluster, tmp_path, unique("proven"), new_token(cluster))
    assert role.server is not None and role.heartbeat is not None
    verifier = cluster.service.router.verifier
    before = verifier.probes
    for _ in range(2):
        result = alice.limen("ssh", role.name, "echo proven")
        assert result.stdout == "proven\n", result.stderr
    assert verifier.probes == before + 1  # the second connection cost no handshake

    # The node moves behind a relay (another address that really serves it).
    relay = cluster.run(Relay(role.server.port).start())
    try:
        role.heartbeat.addr = f"127.0.0.1:{relay.port}"
        cluster.run(role.heartbeat.beat())
        result = alice.limen("ssh", role.name, "echo moved")
        assert result.stdout == "moved\n", result.stderr
        assert verifier.probes == before + 2
    finally:
        cluster.run(relay.close())


def test_without_allowed_networks_loopback_is_refused_and_the_local_node_still_works(
    tmp_path: Path,
) -> None:
    config = default_config(tmp_path / "data")
    config.proxy.node_networks = []
    strict = ClusterHarness(tmp_path, config=config).start()
    try:
        claimer = HandNode(strict, unique("loop"))
        joined = claimer.try_join(new_token(strict), addr="127.0.0.1:22")
        assert joined.status_code == 400 and "loopback" in error_of(joined)
        claimer.join(new_token(strict))
        beat = claimer.heartbeat("127.0.0.1:22")
        assert beat.status_code == 400 and "proxy.node_networks" in error_of(beat)
        # The quick start's own node (same process) needs no allowed network.
        user = new_user(strict, "local", logins="root")
        result = user.limen("ssh", "node1", "echo local")
        assert result.stdout == "local\n", result.stderr
    finally:
        strict.stop()

"""Issue 10, hole 6: node credentials lived a year. Now a node's host certificate and API
token live `auth.node_credential_ttl` (30 minutes in these clusters), the node renews
both once a third of that is gone, proving it holds its registered host key, and the
old token stops working; live sessions go on, new connections get the new certificate.
A node away longer than the lifetime must join again with a new token.
"""

from __future__ import annotations

import asyncio
import selectors
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import asyncssh
import pytest

from limen.auth.node_credentials import sign_renewal
from limen.config import JoinOptions
from limen.errors import AccessDenied, NotFound
from limen.node.cluster.role import NodeRole
from limen.proxy.node_verify import fetch_host_certificate
from limen.proxy.ssh_routes import NodeRoute
from limen.sshauth import CertFacts, read_certificate
from tests.support.cluster import ClusterHarness, default_config
from tests.support.node_api import HandNode, error_of, joined_role, new_token
from tests.support.ssh_access import CLUSTER, clean_env, new_user, unique, wait_until
from tests.support.tunnel import tunnel_of


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterHarness]:
    config = default_config(tmp_path / "data")
    config.auth.node_credential_ttl = "30m"
    harness = ClusterHarness(tmp_path, config=config).start()
    yield harness
    harness.stop()


def _as_node(cluster: ClusterHarness, role: NodeRole, token: str) -> HandNode:
    assert role.identity is not None
    hand = HandNode(cluster, role.name)
    hand.joined = {"node_id": role.identity.node_id, "api_token": token}
    return hand


def _served_certificate(cluster: ClusterHarness, role: NodeRole) -> bytes:
    """The host certificate the node's SSH service presents now (after a key exchange)."""
    assert role.server is not None and role.identity is not None
    route = NodeRoute(role.identity.node_id, role.name, "127.0.0.1", role.server.port)
    return cluster.run(fetch_host_certificate(route, 5))


def _read_line(proc: subprocess.Popen[bytes], timeout: float = 10) -> bytes:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise AssertionError(f"no output within {timeout:g} s")
    return proc.stdout.readline()


def _say(proc: subprocess.Popen[bytes], line: bytes) -> bytes:
    assert proc.stdin is not None
    proc.stdin.write(line)
    proc.stdin.flush()
    return _read_line(proc)


def test_past_half_its_life_a_node_renews_and_its_old_token_is_refused(
    cluster: ClusterHarness, tmp_path: Path
) -> None:
    role = joined_role(cluster, tmp_path, unique("renews"), new_token(cluster))
    assert role.identity is not None and role.heartbeat is not None and role.renewal
    old_token, old = role.identity.api_token, read_certificate(role.identity.host_cert)
    alice = new_user(cluster, "renew", logins="root")
    argv = alice.ssh_argv(f"root@{role.name}.{CLUSTER}", "cat")
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, env=clean_env()) as live:
        try:
            assert _say(live, b"before\n") == b"before\n"
            cluster.clock.advance(timedelta(minutes=16))  # past half of 30 minutes
            cluster.run(role.heartbeat.beat())
            assert role.renewal.renewals == 1
            _check_renewed(cluster, role, old_token, old)
            assert _say(live, b"after\n") == b"after\n"  # the live session went on
            # The node inside `limen start` renews in-process, on the same schedule.
            local = cluster.service.node
            assert local is not None and local.heartbeat and local.renewal
            cluster.run(local.heartbeat.beat())
            assert local.renewal.renewals == 1 and local.identity is not None
            served = read_certificate(_served_certificate(cluster, local))
            assert served.serial == read_certificate(local.identity.host_cert).serial
        finally:
            live.kill()


def test_two_heartbeats_finding_a_renewal_due_renew_once(
    cluster: ClusterHarness, tmp_path: Path
) -> None:
    """The periodic heartbeat and a tunnel's reconnection can beat at once: one renewal,
    and the node keeps a token that works."""
    role = joined_role(cluster, tmp_path, unique("twice"), new_token(cluster))
    assert role.identity is not None and role.heartbeat is not None and role.renewal
    old_token, old = role.identity.api_token, read_certificate(role.identity.host_cert)
    cluster.clock.advance(timedelta(minutes=16))

    async def both() -> None:
        assert role.heartbeat is not None
        await asyncio.gather(role.heartbeat.beat(), role.heartbeat.beat())

    cluster.run(both())
    assert role.renewal.renewals == 1
    _check_renewed(cluster, role, old_token, old)


def _check_renewed(cluster: ClusterHarness, role: NodeRole, old_token: str,
                   old: CertFacts) -> None:
    assert role.identity is not None and role.heartbeat is not None
    new = read_certificate(role.identity.host_cert)
    assert new.serial != old.serial and new.valid_before > old.valid_before
    served = read_certificate(_served_certificate(cluster, role))
    assert (served.serial, served.valid_before) == (new.serial, new.valid_before)
    # The identity on disk holds the new token (a restart keeps working).
    saved = (role.data_dir / "node" / "identity.json").read_text()
    assert role.identity.api_token in saved and old_token not in saved

    refused = _as_node(cluster, role, old_token).heartbeat(role.heartbeat.addr)
    assert refused.status_code == 403
    assert "replaced when the node renewed" in error_of(refused)
    accepted = _as_node(cluster, role, role.identity.api_token).heartbeat(role.heartbeat.addr)
    assert accepted.status_code == 200, accepted.text
    renewed = cluster.events_of("instance.renew", server_id=role.identity.node_id)
    assert renewed and renewed[0]["cert_serial"] == new.serial


def test_the_renewed_certificate_is_served_and_the_tunnel_logs_in_with_it(
    cluster: ClusterHarness, tmp_path: Path
) -> None:
    role = joined_role(cluster, tmp_path, unique("tunrenew"), new_token(cluster),
                       advertise=None)
    assert role.identity is not None and role.renewal is not None
    node_id = role.identity.node_id
    tunnel = wait_until(lambda: tunnel_of(cluster, node_id), 10, "the node's tunnel")
    old_line = role.identity.host_cert
    old = read_certificate(old_line)
    cluster.run(role.renewal.renew())  # what a due heartbeat does, without moving time
    new = read_certificate(role.identity.host_cert)
    assert new.serial != old.serial

    # The tunnel that was up stays up; when it drops, the agent logs in with the new
    # certificate (the old one is refused now: a renewal replaced it).
    assert tunnel_of(cluster, node_id) is tunnel
    cluster.run(_close(tunnel))
    wait_until(lambda: (t := tunnel_of(cluster, node_id)) is not None and t is not tunnel, 15,
               "the agent to reconnect")
    key = asyncssh.read_private_key(str(role.data_dir / "node" / "host_key"))
    with pytest.raises(asyncssh.PermissionDenied):
        cluster.run(_tunnel_login(cluster.service.tunnel_addr, node_id, key, old_line))
    assert wait_until(lambda: [e for e in cluster.events_of("auth", success=False, user=node_id)
                               if "was replaced" in e.get("reason", "")], 10, "the refusal")

    # Stock ssh, through the new tunnel, verifies the node's new certificate.
    alice = new_user(cluster, "tunrenew", logins="root")
    result = alice.ssh(f"root@{role.name}.{CLUSTER}", "echo renewed")
    assert result.stdout == b"renewed\n", result.stderr
    keygen = subprocess.run(["ssh-keygen", "-L", "-f", "-"], capture_output=True, text=True,
                            input=role.identity.host_cert, check=True)
    assert f"Serial: {new.serial}" in keygen.stdout


async def _close(tunnel) -> None:  # noqa: ANN001 - a registry.Tunnel, on the cluster's loop
    tunnel.close()


async def _tunnel_login(addr: str, node_id: str, key: asyncssh.SSHKey, line: str) -> None:
    host, port = addr.rsplit(":", 1)
    cert = asyncssh.import_certificate(line)
    conn = await asyncssh.connect(host, int(port), username=node_id, client_keys=[(key, cert)],
                                  known_hosts=None, agent_path=None, config=[],
                                  preferred_auth="publickey")
    conn.close()


def test_a_stolen_token_without_the_host_key_cannot_renew(
    cluster: ClusterHarness, tmp_path: Path
) -> None:
    role = joined_role(cluster, tmp_path, unique("stolen"), new_token(cluster))
    assert role.identity is not None
    thief = _as_node(cluster, role, role.identity.api_token)
    other_key = asyncssh.generate_private_key("ssh-ed25519")
    now = cluster.clock.now()
    forged = sign_renewal(other_key, role.identity.node_id, role.identity.api_token, now)
    refused = thief.call("POST", "/v1/nodes/renew", forged)
    assert refused.status_code == 403
    assert "not signed with the host key this node registered with" in error_of(refused)
    stale = sign_renewal(role.renewal.host_key, role.identity.node_id, role.identity.api_token,
                         now - timedelta(hours=1))
    late = thief.call("POST", "/v1/nodes/renew", stale)
    assert late.status_code == 403 and "not from now" in error_of(late)
    failures = cluster.events_of("instance.renew", success=False,
                                 server_id=role.identity.node_id)
    assert len(failures) == 2
    # Nothing changed: the node's own token still works.
    assert thief.heartbeat(role.heartbeat.addr).status_code == 200


def test_a_captured_renewal_request_cannot_be_sent_again(
    cluster: ClusterHarness, tmp_path: Path
) -> None:
    role = joined_role(cluster, tmp_path, unique("replayed"), new_token(cluster))
    assert role.identity is not None and role.renewal is not None
    token = role.identity.api_token
    request = sign_renewal(role.renewal.host_key, role.identity.node_id, token,
                           cluster.clock.now())
    node = _as_node(cluster, role, token)
    first = node.call("POST", "/v1/nodes/renew", request)
    assert first.status_code == 200, first.text
    # The same request again, within the proof's window and with the token it names
    # (still accepted once, for a node whose answer was lost): refused.
    again = node.call("POST", "/v1/nodes/renew", request)
    assert again.status_code == 403 and "used before" in error_of(again)
    fresh = first.json()["api_token"]
    assert _as_node(cluster, role, fresh).heartbeat(role.heartbeat.addr).status_code == 200


def test_a_node_away_longer_than_its_credentials_must_join_again(
    cluster: ClusterHarness, tmp_path: Path
) -> None:
    name = unique("away")
    token = new_token(cluster)
    role = joined_role(cluster, tmp_path, name, token)
    assert role.identity is not None
    old_token = role.identity.api_token
    cluster.extra_nodes.remove(role)
    cluster.run(role.stop())
    cluster.clock.advance(timedelta(minutes=31))

    refused = _as_node(cluster, role, old_token).heartbeat("", "tunnel")
    assert refused.status_code == 403
    with pytest.raises(NotFound, match="no node is registered"):
        cluster.run(cluster.service.auth.nodes.find(name))

    back = NodeRole(role.config, role.data_dir, cluster.clock, None, JoinOptions(insecure=True))
    with pytest.raises(AccessDenied, match="expired at .*Join it again with a new token"):
        cluster.run(back.start())
    role.config.join_token = new_token(cluster)
    again = NodeRole(role.config, role.data_dir, cluster.clock, None, JoinOptions(insecure=True))
    cluster.run(again.start())
    cluster.extra_nodes.append(again)
    assert again.identity is not None and again.identity.api_token != old_token
    assert cluster.run(cluster.service.auth.nodes.find(name)).name == again.identity.node_id

"""One port for everything: a cluster whose proxy opens only its web port.

Login, `limen ssh`, stock OpenSSH with ProxyJump (plain SSH on the web port), with the
jump inside TLS (`limen proxy tls`) and through `limen proxy ssh` as earlier configs
had it, and a node behind NAT whose agent
tunnels in through the same port. Silent and garbage clients are dropped while the
listener keeps serving everyone else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from limen.config import Config
from limen.tunnel.data_link import new_ticket, preamble
from tests.support.cluster import ClusterHarness, default_config
from tests.support.ports import free_port
from tests.support.ssh_access import CLUSTER, SshUser, new_user, wait_until
from tests.support.tunnel import NodeProcess, nat_cluster, tunnel_of


@dataclass
class OnePort:
    cluster: ClusterHarness
    node: NodeProcess
    user: SshUser


def _config(data_dir: Path, host: str) -> Config:
    config = default_config(data_dir)
    config.proxy.web_listen_addr = f"{host}:{free_port(host)}"
    config.proxy.ssh_listen_addr = None  # no dedicated SSH port
    config.proxy.tunnel_listen_addr = None  # no dedicated tunnel port
    config.proxy.listener.handshake_timeout = "1s"
    return config


@pytest.fixture(scope="module")
def one_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnePort]:
    base = tmp_path_factory.mktemp("oneport")
    with nat_cluster(base, _config, "oneport") as (cluster, _ns, node):
        yield OnePort(cluster, node, new_user(cluster, "oneport", logins="root"))


def test_only_the_web_port_is_published(one_port: OnePort) -> None:
    cluster = one_port.cluster
    run = json.loads((cluster.data_dir / "run.json").read_text())
    assert run["ssh_addr"] == run["web_addr"] == run["tunnel_addr"] == cluster.web_addr
    assert one_port.user.status["proxy"] == cluster.web_addr
    profile = json.loads(next((one_port.user.home / "keys").glob("*/profile.json")).read_text())
    assert profile["ssh_proxy"] == cluster.web_addr


def _node_id(one_port: OnePort) -> str:
    listed = one_port.user.limen("ls", "--format", "json").json()
    return next(n["id"] for n in listed if n["name"] == one_port.node.name)


def test_limen_ssh_reaches_the_tunneled_node_through_the_web_port(one_port: OnePort) -> None:
    tunnel = tunnel_of(one_port.cluster, _node_id(one_port))
    dialed, opened = tunnel.data_connections, tunnel.channels_opened
    result = one_port.user.limen("ssh", one_port.node.name, "echo one-port")
    assert (result.returncode, result.stdout) == (0, "one-port\n"), result.stderr
    listed = {n["name"]: n for n in one_port.user.limen("ls", "--format", "json").json()}
    assert listed[one_port.node.name]["connection"] == "tunnel"
    # The session came on a plain connection the node dialed back to the web port, from
    # behind its NAT, not inside its tunnel (TLS there).
    assert (tunnel.data_connections, tunnel.channels_opened) == (dialed + 1, opened)


def test_a_made_up_data_connection_ticket_is_refused_and_audited(one_port: OnePort) -> None:
    host, port = one_port.cluster.web_addr.rsplit(":", 1)
    gate = one_port.cluster.service.tunnels.gate
    refused = gate.refused
    with socket.create_connection((host, int(port)), timeout=10) as stranger:
        stranger.sendall(preamble(new_ticket()))
        assert stranger.recv(16) == b""  # closed, nothing said
    assert gate.refused == refused + 1

    def audited() -> list[str]:
        found = one_port.cluster.admin("audit", "search", "--type", "auth", "--since", "10m",
                                       "--format", "json")
        assert found.returncode == 0, found.stderr
        return [e.get("reason", "") for e in json.loads(found.stdout)
                if e.get("kind") == "tunnel-data"]

    reasons = wait_until(audited, 10, "the refusal in the audit log")
    assert "its ticket is unknown, used or expired" in reasons
    result = one_port.user.limen("ssh", one_port.node.name, "echo after-the-stranger")
    assert result.stdout == "after-the-stranger\n", result.stderr


def test_stock_ssh_with_proxyjump_speaks_plain_ssh_to_the_web_port(one_port: OnePort) -> None:
    assert "ProxyJump" in one_port.user.config.read_text()
    stock = one_port.user.ssh("-v", f"root@{one_port.node.name}.{CLUSTER}", "echo", "plain-ssh")
    assert stock.stdout == b"plain-ssh\n", stock.stderr
    # `limen config` puts AES-GCM first (the cheap AEAD cipher for the Python proxy and
    # node): both hops use it, not OpenSSH's default ChaCha20.
    chosen = re.findall(rb"kex: client->server cipher: (\S+)", stock.stderr)
    assert chosen == [b"aes256-gcm@openssh.com"] * 2, stock.stderr


def test_stock_ssh_through_limen_proxy_tls_inside_tls(one_port: OnePort) -> None:
    """`limen config --tls-routing`: every node's ProxyCommand is `limen proxy tls --node`,
    a direct connection inside TLS, and ssh's one SSH connection is to the node."""
    user = one_port.user
    printed = user.limen("config", "--tls-routing")
    assert printed.returncode == 0, printed.stderr
    assert "ProxyJump" not in printed.stdout
    web = one_port.cluster.web_addr
    assert f'proxy tls --node "%r@%h:%p" "{web}"' in printed.stdout
    config = user.home / "ssh_config_tls"
    config.write_text(printed.stdout)
    tunnel = tunnel_of(one_port.cluster, _node_id(one_port))
    dialed = tunnel.data_connections
    stock = user.ssh("-v", f"root@{one_port.node.name}.{CLUSTER}", "echo", "inside-tls",
                     config=config)
    assert stock.stdout == b"inside-tls\n", stock.stderr
    assert f'--node "root@{one_port.node.name}.{CLUSTER}:22" "{web}"'.encode() in stock.stderr
    # One SSH connection, the node's: ssh authenticated once, and made no jump.
    assert stock.stderr.count(b"Authenticated to") == 1, stock.stderr
    assert b"Setting implicit ProxyCommand" not in stock.stderr
    assert tunnel.data_connections == dialed + 1  # the node behind NAT dialed back
    scp_source = user.home / "payload.txt"
    scp_source.write_text("over tls\n")
    copied = user.tool("scp", str(scp_source),
                       f"root@{one_port.node.name}.{CLUSTER}:/tmp/limen-oneport.txt")
    assert copied.returncode == 0, copied.stderr

    def audited() -> list[dict[str, object]]:
        found = one_port.cluster.admin("audit", "search", "--type", "auth", "--since", "10m",
                                       "--format", "json")
        assert found.returncode == 0, found.stderr
        return [e for e in json.loads(found.stdout)
                if e.get("kind") == "tls" and e.get("user") == user.name]

    event = wait_until(audited, 10, "the direct connection's auth event")[-1]
    assert (event["success"], event["login"], event["method"]) == (True, "root", "cert")


def test_configs_from_before_still_work(one_port: OnePort) -> None:
    """Earlier `limen config --tls-routing` configs keep working: the jump to an alias
    whose ProxyCommand is `limen proxy tls "[%h]:%p"` (OpenSSH's jump inside TLS), and
    before it `limen proxy ssh %r@%h:%p` (the jump made in asyncssh)."""
    user = one_port.user
    command = next(line for line in user.limen("config", "--tls-routing").stdout.splitlines()
                   if "ProxyCommand" in line).split("ProxyCommand", 1)[1].strip()
    launcher = command.split(" proxy tls ", 1)[0]
    web_host, web_port = one_port.cluster.web_addr.rsplit(":", 1)
    alias = f"_proxy.{CLUSTER}"
    head = user.config.read_text().split(f"\nHost *.{CLUSTER} !", 1)[0]
    jumped = user.home / "ssh_config_tls_jump"
    jumped.write_text(head.replace(f"Host *.{CLUSTER} ", f"Host *.{CLUSTER} {alias} ", 1) + (
        f"\nHost *.{CLUSTER} !{alias}\n    ProxyJump root@{alias}\n"
        f"Host {alias}\n    HostName {web_host}\n    Port {web_port}\n"
        f'    ProxyCommand {launcher} proxy tls "[%h]:%p"\n'))
    stock = user.ssh(f"root@{one_port.node.name}.{CLUSTER}", "echo", "jump-in-tls",
                     config=jumped)
    assert stock.stdout == b"jump-in-tls\n", stock.stderr
    stock = user.ssh("-o", f"ProxyCommand={launcher} proxy ssh %r@%h:%p",
                     f"root@{one_port.node.name}.{CLUSTER}", "echo", "proxy-ssh")
    assert stock.stdout == b"proxy-ssh\n", stock.stderr


def test_bulk_data_both_ways_through_limen_proxy_tls_arrives_whole(one_port: OnePort) -> None:
    """`limen proxy tls` relays stdin/stdout through TLS: megabytes each way, more than
    every buffer on the path holds, arrive whole and in order (a side whose output is
    full stops reading instead of dropping or reordering)."""
    user = one_port.user
    printed = user.limen("config", "--tls-routing")
    config = user.home / "ssh_config_tls_bulk"
    config.write_text(printed.stdout)
    target = f"root@{one_port.node.name}.{CLUSTER}"
    payload = random.Random(17).randbytes(24 * 1024 * 1024)
    up = user.ssh(target, "sha256sum", config=config, input=payload, timeout=120)
    assert up.returncode == 0, up.stderr
    assert up.stdout.split()[0].decode() == hashlib.sha256(payload).hexdigest()
    down = user.ssh(target, "head -c 25165824 /dev/zero | tr '\\0' x", config=config,
                    timeout=120)
    assert down.returncode == 0, down.stderr
    assert down.stdout == b"x" * 24 * 1024 * 1024


def test_a_silent_client_is_dropped_and_others_still_served(one_port: OnePort) -> None:
    host, port = one_port.cluster.web_addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as silent:
        started = time.monotonic()
        assert silent.recv(16) == b""  # the server closed it
        assert time.monotonic() - started < 5
    with socket.create_connection((host, int(port)), timeout=10) as garbage:
        garbage.sendall(b"\x00\x01GARBAGE\r\n\r\n")
        with contextlib.suppress(ConnectionResetError):  # unread bytes: a reset is a close
            assert garbage.recv(16) == b""
    result = one_port.user.limen("ssh", one_port.node.name, "echo still-serving")
    assert result.stdout == "still-serving\n", result.stderr

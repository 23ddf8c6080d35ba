"""A node behind NAT: `limen start --roles node` runs inside a network namespace that can
reach the proxy and that nothing can connect into (tests/support/netns.py). Sessions
through the proxy work with `limen ssh` and stock OpenSSH; the proxy restarts and the
agent is back within 10 s, after which new sessions work.

CI runs as root: building the namespace must work there, so a failure to build it is a
test failure, never a skip.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from limen.auth.join import JoinRequest
from limen.config import Config
from tests.support.cluster import ClusterHarness, default_config
from tests.support.netns import NatNamespace
from tests.support.ports import free_ports
from tests.support.ssh_access import CLUSTER, SshUser, new_user, unique, wait_until
from tests.support.tunnel import NodeProcess, nat_cluster, restart_proxy, tunnel_of


@dataclass
class NatSetup:
    cluster: ClusterHarness
    ns: NatNamespace
    node: NodeProcess
    node_id: str
    user: SshUser



def _config(data_dir: Path, host: str) -> Config:
    """The proxy listens only on the host's end of the veth, on fixed ports: after a
    restart the agent must find it at the same address. Its ports are separate, so the
    agent dials the dedicated tunnel port with plain SSH (test_one_port.py has a NAT
    node tunneling through the multiplexed web port)."""
    config = default_config(data_dir)
    config.proxy.listener_mode = "separate"
    web, ssh, tunnel = free_ports(3, host)
    config.proxy.web_listen_addr = f"{host}:{web}"
    config.proxy.ssh_listen_addr = f"{host}:{ssh}"
    config.proxy.tunnel_listen_addr = f"{host}:{tunnel}"
    return config


@pytest.fixture(scope="module")
def nat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatSetup]:
    base = tmp_path_factory.mktemp("nat")
    with nat_cluster(base, _config, "natted") as (cluster, ns, node):
        node_id = node.wait_tunneled()
        yield NatSetup(cluster, ns, node, node_id, new_user(cluster, "natuser", logins="root"))


def test_nobody_can_connect_into_the_namespace(nat: NatSetup) -> None:
    ns = nat.ns
    # Something listening on every address inside: still unreachable from outside.
    listener = subprocess.Popen(
        ns.exec_argv(sys.executable, "-c",
                     "import socket,sys,time; s=socket.create_server(('0.0.0.0', 0)); "
                     "print(s.getsockname()[1], flush=True); time.sleep(60)"),
        stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None
        port = int(listener.stdout.readline())
        with pytest.raises(OSError):
            socket.create_connection((ns.node_addr, port), timeout=3).close()
        # The node itself listens on nothing: its only link is the tunnel it dialed.
        listening = subprocess.run(ns.exec_argv("ss", "-Hltn"), capture_output=True,
                                   text=True, check=True).stdout.splitlines()
        assert [line for line in listening if f":{port} " not in line] == []
        # ...and its tunnel comes from inside the namespace, to the tunnel port.
        tunnel = tunnel_of(nat.cluster, nat.node_id)
        assert tunnel.peer_host == ns.node_addr
        tunnel_port = int(nat.cluster.config.proxy.tunnel_listen_addr.rsplit(":", 1)[1])
        assert tunnel.conn.get_extra_info("sockname")[1] == tunnel_port
    finally:
        listener.kill()
        listener.wait()
        listener.stdout.close()


def test_sessions_through_the_tunnel_with_limen_and_stock_openssh(nat: NatSetup) -> None:
    name = nat.node.name
    listed = {n["name"]: n for n in nat.user.limen("ls", "--format", "json").json()}
    assert listed[name]["connection"] == "tunnel" and listed[name]["online"] is True
    assert listed[name]["addr"] == ""
    result = nat.user.limen("ssh", name, "echo behind-nat")
    assert (result.returncode, result.stdout) == (0, "behind-nat\n"), result.stderr
    stock = nat.user.ssh(f"root@{name}.{CLUSTER}", "echo", "stock-behind-nat")
    assert stock.stdout == b"stock-behind-nat\n", stock.stderr
    # The session ran inside the namespace: it sees the namespace's address.
    addrs = nat.user.ssh(f"root@{name}.{CLUSTER}", "ip -4 -o addr show")
    assert nat.ns.node_addr.encode() in addrs.stdout, addrs.stderr


def test_proxy_restart_the_agent_is_back_within_10_s(nat: NatSetup) -> None:
    cluster, name = nat.cluster, nat.node.name
    before = tunnel_of(cluster, nat.node_id)
    back_at = restart_proxy(cluster)
    assert tunnel_of(cluster, nat.node_id) is not before
    wait_until(lambda: tunnel_of(cluster, nat.node_id), 10, "the agent to reconnect")
    took = time.monotonic() - back_at
    assert took < 10, f"the agent took {took:.1f} s"
    nat.node.check_alive()
    # New sessions work, with the same login: the cluster's CAs survived the restart.
    result = nat.user.limen("ssh", name, "echo after-restart")
    assert (result.returncode, result.stdout) == (0, "after-restart\n"), result.stderr
    stock = nat.user.ssh(f"root@{name}.{CLUSTER}", "echo", "stock-after-restart")
    assert stock.stdout == b"stock-after-restart\n", stock.stderr
    listed = {n["name"]: n for n in nat.user.limen("ls", "--format", "json").json()}
    assert listed[name]["online"] is True


def test_a_direct_dial_into_silence_gives_up_within_5_s(nat: NatSetup) -> None:
    """A node registered at an address that drops SYNs: the proxy does not keep the user
    waiting for the kernel's minutes of retries."""
    silent = NatNamespace.create(silent=True)
    cluster = nat.cluster
    try:
        auth = cluster.service.auth
        name = unique("dropped")
        request = JoinRequest(name=name, public_key=new_key_line(),
                              addr=f"{silent.node_addr}:3022")
        cluster.run(auth.nodes.register(request, {"net": "silent"}, local=False))
        started = time.monotonic()
        result = nat.user.limen("ssh", name, "true")
        took = time.monotonic() - started
        assert result.returncode == 255
        assert f"node '{name}' did not answer" in result.stderr and "within 5 s" in result.stderr
        assert 5 <= took < 12, f"took {took:.1f} s"  # 5 s of dialing, plus the CLI itself
    finally:
        silent.remove()


def new_key_line() -> str:
    key = asyncssh.generate_private_key("ssh-ed25519")
    return key.export_public_key("openssh").decode()

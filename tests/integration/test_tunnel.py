"""A node without an address: `limen start --roles node` joins through --proxy, dials the
proxy's tunnel server and is reached through it by every way in.

The module has a cluster of its own: node1 (in-process, direct) and a tunneled node in a
process of its own on this host. The NAT case, with a network namespace nobody can
connect into, is test_tunnel_nat.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import httpx
import pexpect
import pytest

from limen.client.trust import verifying_context
from limen.diag.metrics import REGISTRY
from tests.support.cluster import ClusterHarness
from tests.support.ports import free_port
from tests.support.ssh_access import (
    CLUSTER,
    SshUser,
    clean_env,
    new_user,
    random_file,
    sha256_file,
    unique,
    wait_until,
)
from tests.support.tunnel import NodeProcess, tunnel_of


@pytest.fixture(scope="module")
def tunneled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClusterHarness, str]]:
    base = tmp_path_factory.mktemp("tunnel")
    harness = ClusterHarness(base).start()
    name = unique("behind")
    node = NodeProcess(harness, base, name, "env=dev,net=nat")
    try:
        node.start()
        node.wait_tunneled()
        yield harness, name
    finally:
        node.stop()
        harness.stop()


@pytest.fixture(scope="module")
def alice(tunneled: tuple[ClusterHarness, str]) -> SshUser:
    return new_user(tunneled[0], "tun", logins="root")


def test_listed_as_tunnel_with_since_and_heartbeat(
    tunneled: tuple[ClusterHarness, str], alice: SshUser
) -> None:
    cluster, name = tunneled
    nodes = {n["name"]: n for n in alice.limen("ls", "--format", "json").json()}
    assert nodes[name]["connection"] == "tunnel" and nodes[name]["online"] is True
    assert nodes[name]["addr"] == ""  # nothing to dial
    assert nodes[name]["since"] and nodes[name]["last_heartbeat"]
    assert nodes["node1"]["connection"] == "direct"  # the in-process node stays direct
    assert nodes["node1"]["since"]
    text = alice.limen("ls").stdout
    assert "Since" in text and "tunnel" in text and "direct" in text
    # run.json tells admins where the tunnel port is; the ping tells agents where to
    # dial: by default the multiplexed web port, SSH inside TLS (test_tunnel_nat.py
    # covers the dedicated port).
    run = json.loads((cluster.data_dir / "run.json").read_text())
    assert run["tunnel_addr"] == cluster.service.tunnel_addr != cluster.web_addr
    assert run["tunnel_addr"].startswith("127.0.0.1:")
    ca = verifying_context((cluster.data_dir / "ca" / "tls_ca.crt").read_text())
    ping = httpx.get(f"https://{cluster.web_addr}/v1/ping", verify=ca).json()
    assert (ping["tunnel_addr"], ping["tunnel_tls"]) == (cluster.web_addr, True)
    assert ping["tunnel_host_key"].startswith("ssh-ed25519 ")
    # `limen nodes ls` is the same listing.
    assert name in alice.limen("nodes", "ls").stdout


def test_limen_ssh_stock_ssh_and_scp_sftp_through_the_tunnel(
    tunneled: tuple[ClusterHarness, str], alice: SshUser, tmp_path: Path
) -> None:
    cluster, name = tunneled
    result = alice.limen("ssh", name, "echo via-limen; hostname >/dev/null")
    assert (result.returncode, result.stdout) == (0, "via-limen\n"), result.stderr
    stock = alice.ssh(f"root@{name}.{CLUSTER}", "echo", "stock")
    assert stock.stdout == b"stock\n", stock.stderr
    exit_code = alice.ssh(f"root@{name}.{CLUSTER}", "exit 7")
    assert exit_code.returncode == 7

    source = random_file(tmp_path / "up.bin", 8)
    remote = f"/tmp/{unique('tunnel-scp')}.bin"
    host = f"{name}.{CLUSTER}"  # `limen config` covers NODE.CLUSTER names
    up = alice.tool("scp", str(source), f"root@{host}:{remote}")
    assert up.returncode == 0, up.stderr
    back = tmp_path / "back.bin"
    batch = tmp_path / "batch"
    batch.write_text(f"get {remote} {back}\nrm {remote}\n")
    sftp = alice.tool("sftp", "-b", str(batch), f"root@{host}")
    assert sftp.returncode == 0, sftp.stderr
    assert sha256_file(back) == sha256_file(source)

    scp = alice.limen("scp", str(source), f"root@{name}:{remote}")
    assert scp.returncode == 0, scp.stderr
    digest = alice.limen("ssh", name, f"sha256sum {remote} && rm {remote}")
    assert digest.stdout.split()[0] == sha256_file(source), digest.stderr
    served = wait_until(
        lambda: [e for e in cluster.events_of("session.start", user=alice.name)
                 if e.get("server_hostname") == name], 10, "session.start from the node")
    assert served


def test_port_forwarding_through_the_tunnel(
    tunneled: tuple[ClusterHarness, str], alice: SshUser, tmp_path: Path
) -> None:
    _, name = tunneled
    # Something to reach on the node's side: the node runs on this host, so a listener
    # on loopback here is on "the node's loopback".
    server = socket.create_server(("127.0.0.1", 0))
    target_port = server.getsockname()[1]

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"hello " + conn.recv(100))

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    local_port = free_port()
    errors = tmp_path / "ssh-L.err"
    with errors.open("wb") as err:
        forward = subprocess.Popen(
            alice.ssh_argv("-N", "-o", "ExitOnForwardFailure=yes",
                           "-L", f"127.0.0.1:{local_port}:127.0.0.1:{target_port}",
                           f"root@{name}.{CLUSTER}"),
            env=clean_env(), stdin=subprocess.DEVNULL, stderr=err,
        )
    try:
        def connected() -> socket.socket | None:
            try:
                return socket.create_connection(("127.0.0.1", local_port), timeout=2)
            except OSError:
                assert forward.poll() is None, errors.read_text()
                return None

        with wait_until(connected, 20, "the forwarded port") as sock:
            sock.sendall(b"tunnel")
            assert sock.recv(100) == b"hello tunnel"
    finally:
        forward.terminate()
        forward.wait(10)
        server.close()


def test_live_session_is_tracked_and_many_share_one_tunnel(
    tunneled: tuple[ClusterHarness, str], alice: SshUser
) -> None:
    cluster, name = tunneled
    node_id = next(n["id"] for n in alice.limen("ls", "--format", "json").json()
                   if n["name"] == name)
    tunnel = tunnel_of(cluster, node_id)
    opened, dialed = tunnel.channels_opened, tunnel.data_connections
    shells = [pexpect.spawn("ssh", alice.ssh_argv("-tt", f"root@{name}.{CLUSTER}")[1:], timeout=30,
                            encoding="utf-8", env=clean_env()) for _ in range(5)]
    try:
        for i, shell in enumerate(shells):
            shell.sendline(f"echo READY-$((100+{i}))")
            shell.expect(f"READY-{100 + i}")
        def listed() -> list[dict]:
            sessions = alice.limen("sessions", "ls", "--format", "json").json()
            mine = [s for s in sessions if s["node"] == name and s["user"] == alice.name
                    and s["interactive"]]
            return mine if len(mine) >= 5 else []

        wait_until(listed, 15, "the five live sessions listed")
        # One tunnel carried them all: the same connection asked for each session's
        # connection, which the node dialed back (limen.tunnel.data_link).
        assert tunnel_of(cluster, node_id) is tunnel
        assert tunnel.data_connections >= dialed + 5
        assert tunnel.channels_opened == opened
    finally:
        for shell in shells:
            shell.sendline("exit")
            shell.expect(pexpect.EOF)
            shell.close(force=True)

    def recorded() -> list[dict]:
        found = cluster.admin("recordings", "search", "READY-100", "--format", "json")
        assert found.returncode == 0, found.stderr
        return [r for r in json.loads(found.stdout) if r["node"] == name and r["complete"]]

    wait_until(recorded, 20, "the tunneled session's recording")


def test_a_node_configured_without_data_connections_takes_sessions_in_its_tunnel(
    tunneled: tuple[ClusterHarness, str], alice: SshUser, tmp_path: Path
) -> None:
    cluster, _ = tunneled
    name = unique("inside")
    config = tmp_path / "inside.yaml"
    config.write_text("ssh: {tunnel_data_connections: false}\n")
    node = NodeProcess(cluster, tmp_path, name, "fleet=inside",
                       extra=("--config", str(config))).start()
    try:
        tunnel = tunnel_of(cluster, node.wait_tunneled())
        result = alice.limen("ssh", name, "echo inside-the-tunnel")
        assert (result.returncode, result.stdout) == (0, "inside-the-tunnel\n"), result.stderr
        assert tunnel.gate is None  # the agent offered no data connections
        assert (tunnel.channels_opened, tunnel.data_connections) == (1, 0)
    finally:
        node.stop()


def test_an_offline_tunnel_node_is_a_clear_error_and_listed_offline(
    tunneled: tuple[ClusterHarness, str], alice: SshUser, tmp_path: Path
) -> None:
    cluster, _ = tunneled
    name = unique("gone")
    node = NodeProcess(cluster, tmp_path, name, "fleet=gone").start()
    try:
        node_id = node.wait_tunneled()
        assert alice.limen("ssh", name, "true").returncode == 0
    finally:
        node.stop(signal.SIGKILL)  # no goodbye: the registration stays until it expires
    # The kernel closed the dead process's socket: the proxy drops the tunnel at once.
    wait_until(lambda: tunnel_of(cluster, node_id) is None, 10, "the tunnel to close")
    result = alice.limen("ssh", name, "true")
    assert result.returncode == 255
    assert f"node '{name}' is offline" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    stock = alice.ssh(f"root@{name}.{CLUSTER}", "true")
    assert stock.returncode == 255 and b"is offline" in stock.stderr
    listed = {n["name"]: n for n in alice.limen("ls", "--format", "json").json()}
    assert listed[name]["online"] is False and listed[name]["connection"] == "tunnel"
    assert "tunnel (offline)" in alice.limen("ls").stdout


def test_presence_lost_while_the_tunnel_was_down_returns_at_reconnect(
    tunneled: tuple[ClusterHarness, str], alice: SshUser
) -> None:
    cluster, name = tunneled
    stores = cluster.service.auth.ctx.stores
    node = next(n for n in cluster.run(stores.nodes.list()) if n.spec.hostname == name)
    tunnel = tunnel_of(cluster, node.name)
    # As after an outage longer than the node TTL: its presence has expired (the
    # registration stays: only a removal or lapsed credentials end that)...
    cluster.run(stores.node_presence.delete(node.name))
    assert name not in {n["name"] for n in alice.limen("ls", "--format", "json").json()}
    # ...and the network comes back: the agent reconnects and the node is present again
    # at once, not a heartbeat interval (60 s) later, by a beat inside the tunnel: no
    # HTTPS heartbeat reaches the proxy (the in-process node1 beats without HTTP).
    beats_before = _heartbeats()
    cluster.run(_close(tunnel))
    wait_until(lambda: cluster.run(cluster.service.auth.nodes.presence_of(node.name)), 10,
               "the node's presence to return")
    wait_until(lambda: tunnel_of(cluster, node.name), 10, "the tunnel to come back")
    beats = _heartbeats()
    assert beats["tunnel"] > beats_before["tunnel"] and beats["https"] == beats_before["https"]
    result = alice.limen("ssh", name, "echo present-again")
    assert result.stdout == "present-again\n", result.stderr


def _heartbeats() -> dict[str, float]:
    """Heartbeats this process's proxy answered, by way (limen_node_heartbeats)."""
    return _by_way("limen_node_heartbeats_total")


def _by_way(metric: str) -> dict[str, float]:
    return {via: REGISTRY.get_sample_value(metric, {"via": via}) or 0.0
            for via in ("tunnel", "https")}


def test_the_nodes_access_feed_comes_back_inside_its_tunnel(
    tunneled: tuple[ClusterHarness, str], alice: SshUser
) -> None:
    """A tunnel-only node reads its access feed inside its tunnel, and after the tunnel
    drops it waits for the tunnel rather than dialing the web port. Its cache is synced
    again through the tunnel: a node refuses sessions until it is (fail closed)."""
    cluster, name = tunneled
    node = next(n for n in cluster.run(cluster.service.auth.ctx.stores.nodes.list())
                if n.spec.hostname == name)
    feeds_before = _by_way("limen_access_feeds_total")
    cluster.run(_close(tunnel_of(cluster, node.name)))
    wait_until(lambda: _by_way("limen_access_feeds_total")["tunnel"] > feeds_before["tunnel"],
               10, "the node's access feed to open again inside its tunnel")
    assert _by_way("limen_access_feeds_total")["https"] == feeds_before["https"]
    result = alice.limen("ssh", name, "echo synced")
    assert result.stdout == "synced\n", result.stderr


def _connections(port: str, side: str) -> list[tuple[int, str]]:
    """(owning pid, ss's timer field) of each established TCP connection whose ``side``
    (``sport`` or ``dport``) is ``port``."""
    out = subprocess.run(["ss", "-tnoHp", "state", "established", f"( {side} = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        pid = re.search(r"pid=(\d+)", line)
        timer = re.search(r"timer:\(([^)]*)\)", line)
        if pid:
            found.append((int(pid.group(1)), timer.group(1) if timer else ""))
    return found


def _probe_seconds(timer: str) -> float | None:
    """Seconds until the next TCP keepalive probe, from a timer like keepalive,59sec,0."""
    parts = timer.split(",")
    if len(parts) < 2 or parts[0] != "keepalive":
        return None
    when = re.fullmatch(r"(?:(\d+)min)?(?:(\d+)sec)?(?:(\d+)ms)?", parts[1])
    if when is None:
        return None
    minutes, seconds, millis = (int(g or 0) for g in when.groups())
    return 60 * minutes + seconds + millis / 1000


def test_the_tunnel_sends_tcp_keepalives_a_minute_apart(
    tunneled: tuple[ClusterHarness, str],
) -> None:
    """SSH keepalives and feed pings are 5 minutes apart (each wakes the proxy); what
    holds a quiet tunnel open through NAT gateways (AWS 350 s, Azure 240 s) is the
    kernel's TCP keepalive on the node's sockets, probing after a minute of silence
    (asyncssh's own SO_KEEPALIVE waits the system's two hours)."""
    cluster, name = tunneled
    port = cluster.web_addr.rsplit(":", 1)[1]
    here = os.getpid()

    def node_side() -> list[str]:
        timers = []
        for pid, timer in _connections(port, "dport"):
            with contextlib.suppress(OSError):
                if pid != here and name in Path(f"/proc/{pid}/cmdline").read_text():
                    timers.append(timer)
        return timers

    def probing(timers: list[str]) -> bool:
        probes = [_probe_seconds(t) for t in timers]
        return all(p is not None and p <= 60 for p in probes)

    # ss shows one timer a socket: while bytes are in flight, the retransmission timer
    # ("on,...") stands where the keepalive timer is shown, so a look that finds one is
    # taken again. A socket with no keepalive timer never passes.
    seen: list[list[str]] = []

    def node_probes() -> bool:
        seen.append(node_side())
        # The tunnel at least, which carries the access feed too (the connection that
        # sends events may be open as well).
        return len(seen[-1]) >= 1 and probing(seen[-1])

    try:
        wait_until(node_probes, 10, "every connection of the node to probe within 60 s")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {seen[-1]}") from None

    # The proxy's end of the tunnel probes too: a node that vanished without a word is
    # noticed in minutes, not at an SSH keepalive 5 minutes apart (times three).
    def proxy_probes() -> bool:
        seen.append([t for pid, t in _connections(port, "sport") if pid == here])
        return any(probing([t]) for t in seen[-1])

    try:
        wait_until(proxy_probes, 10, "the proxy's end of the tunnel to probe within 60 s")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {seen[-1]}") from None


async def _close(tunnel) -> None:  # noqa: ANN001 - a registry.Tunnel
    tunnel.close()


async def _login_as(addr: str, username: str, key: asyncssh.SSHKey,
                    cert: asyncssh.SSHCertificate) -> asyncssh.SSHClientConnection:
    host, port = addr.rsplit(":", 1)
    return await asyncssh.connect(host, int(port), username=username, client_keys=[(key, cert)],
                                  known_hosts=None, agent_path=None, config=[],
                                  preferred_auth="publickey")


def test_a_node_certificate_cannot_register_as_another_node(
    tunneled: tuple[ClusterHarness, str], tmp_path: Path
) -> None:
    cluster, name = tunneled
    stores = cluster.service.auth.ctx.stores
    nodes = {n.spec.hostname: n.name for n in cluster.run(stores.nodes.list())}
    node_a, node_b = nodes[name], nodes["node1"]
    # Node A's own identity, as its agent holds it on disk.
    data = cluster.base / name / "node"  # NodeProcess puts its data dir under the base
    identity = json.loads((data / "identity.json").read_text())
    key = asyncssh.read_private_key(str(data / "host_key"))
    cert = asyncssh.import_certificate(identity["host_cert"])
    addr = cluster.service.tunnel_addr

    with pytest.raises(asyncssh.PermissionDenied):  # logging in as B
        cluster.run(_login_as(addr, node_b, key, cert))

    async def offer_b() -> None:  # logged in as A, offering B
        conn = await _login_as(addr, node_a, key, cert)
        try:
            with pytest.raises(asyncssh.ChannelListenError):
                await conn.forward_remote_port(node_b, 3022, "127.0.0.1", 9)
        finally:
            conn.close()

    cluster.run(offer_b())
    assert tunnel_of(cluster, node_b) is None  # node1 is direct and stays so

    def reasons() -> str:
        refusals = [e for e in cluster.events_of("auth", success=False)
                    if e.get("kind") == "tunnel"]
        return " | ".join(e.get("reason", "") for e in refusals)

    # The tunnel server audits refusals in the background: wait for both to land.
    wait_until(lambda: f"may offer only itself, not {node_b}" in reasons(), 10,
               "the refused offer's audit event")
    assert f"may not open a tunnel as '{node_b}'" in reasons()

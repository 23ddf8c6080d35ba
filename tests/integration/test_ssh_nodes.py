"""More than one node: a node joined with a token (a real `limen start --roles node`
process) is listed and reached by name; label selectors run a command on every matching
node with the node's name on each line; a node that went away is a clear error.

The module has a cluster of its own, so the set of nodes is exactly what it builds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import ClusterHarness
from tests.support.ssh_access import CLUSTER, SshUser, new_user, unique, wait_until


class JoinedNode:
    """`limen start --roles node` in a process of its own, joined with a fresh token."""

    def __init__(self, cluster: ClusterHarness, base: Path, name: str, labels: str) -> None:
        self.cluster = cluster
        self.name = name
        self.data_dir = base / name
        self.log = base / f"{name}.log"
        token = cluster.admin("tokens", "add", "--type", "node", "--format", "json")
        assert token.returncode == 0, token.stderr
        self.token = token.json()["token"]
        self.labels = labels
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> JoinedNode:
        argv = [sys.executable, "-m", "limen.cli.main", "start", "--roles", "node",
                "--token", self.token, "--proxy", self.cluster.web_addr, "--insecure",
                "--name", self.name, "--labels", self.labels,
                "--listen-addr", "127.0.0.1:0", "--data-dir", str(self.data_dir),
                "--advertise-addr", "127.0.0.1"]  # direct: without it the node tunnels
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self._registered, 30, f"node {self.name} to register")
        return self

    def _registered(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited:\n{self.log.read_text()}")
        nodes = self.cluster.run(self.cluster.service.auth.ctx.stores.nodes.list())
        return any(n.spec.hostname == self.name for n in nodes)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)  # the node and the shells it started
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClusterHarness, str]]:
    """A cluster of this module's own: node1 (in-process) and a joined node, both env=dev."""
    base = tmp_path_factory.mktemp("nodes")
    harness = ClusterHarness(base).start()
    name = unique("node2")
    node = JoinedNode(harness, base, name, "env=dev,fleet=joined")
    try:
        node.start()
        yield harness, name
    finally:
        node.stop()
        harness.stop()


def _user(two_nodes: tuple[ClusterHarness, str], prefix: str) -> SshUser:
    return new_user(two_nodes[0], prefix, logins="root")


def test_joined_node_is_listed_and_reached_by_name(two_nodes: tuple[ClusterHarness, str]) -> None:
    cluster, node2 = two_nodes
    alice = _user(two_nodes, "joined")
    listed = alice.limen("ls", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    nodes = {n["name"]: n for n in listed.json()}
    assert set(nodes) == {"node1", node2}
    assert nodes[node2]["labels"] == {"env": "dev", "fleet": "joined"}
    assert nodes[node2]["id"] and nodes[node2]["addr"].startswith("127.0.0.1:")
    assert nodes[node2]["last_heartbeat"]
    only = alice.limen("ls", "fleet=joined", "--format", "json").json()
    assert [n["name"] for n in only] == [node2]
    text = alice.limen("ls").stdout
    assert node2 in text and "fleet=joined" in text

    result = alice.limen("ssh", node2, "echo reached")
    assert (result.returncode, result.stdout) == (0, "reached\n"), result.stderr
    stock = alice.ssh(f"root@{node2}.{CLUSTER}", "echo stock")
    assert stock.stdout == b"stock\n", stock.stderr
    by_id = alice.limen("ssh", nodes[node2]["id"], "true")
    assert by_id.returncode == 0, by_id.stderr
    served = wait_until(lambda: cluster.events_of("session.start", user=alice.name), 10,
                        "session.start events")
    assert {e["server_hostname"] for e in served} == {node2}  # node2 ran them, not node1


def test_label_selector_runs_everywhere_with_name_prefixes(
    two_nodes: tuple[ClusterHarness, str]
) -> None:
    _, node2 = two_nodes
    alice = _user(two_nodes, "fanout")
    result = alice.limen("ssh", "env=dev", "printf 'one\\ntwo'; echo oops >&2")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == sorted(
        ["[node1] one", "[node1] two", f"[{node2}] one", f"[{node2}] two"]
    )
    assert sorted(result.stderr.splitlines()) == ["[node1] oops", f"[{node2}] oops"]

    joined = alice.limen("ssh", "root@fleet=joined", "echo only")
    assert joined.stdout == f"[{node2}] only\n", joined.stderr

    failed = alice.limen("ssh", "env=dev", "exit 3")
    assert failed.returncode == 1
    assert f"[{node2}] failed: exit status 3" in failed.stderr
    assert "[node1] failed: exit status 3" in failed.stderr

    none = alice.limen("ssh", "env=nowhere", "true")
    assert none.returncode == 255 and "no node you may reach" in none.stderr


def test_a_node_that_went_away_is_a_clear_error(
    two_nodes: tuple[ClusterHarness, str], tmp_path: Path
) -> None:
    cluster, _ = two_nodes
    name = unique("gone")
    node = JoinedNode(cluster, tmp_path, name, "fleet=gone").start()
    alice = _user(two_nodes, "offline")
    try:
        assert alice.limen("ssh", name, "true").returncode == 0
    finally:
        node.stop(signal.SIGKILL)  # no goodbye: its entry stays until heartbeats lapse
    result = alice.limen("ssh", name, "true")
    assert result.returncode == 255
    assert f"node '{name}'" in result.stderr and "could not be reached" in result.stderr
    assert "Traceback" not in result.stderr

"""More than one node: a node joined with a token (a real `limen start --roles node`
process) is listed and reached by name; label selectors run a command on every matching
node with the node's name on each line; a node that went away is a clear error.

The module has a cluster of its own, so the set of nodes is exactly what it builds.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import ClusterHarness
from tests.support.ssh_access import CLUSTER, SshUser, new_user, unique, wait_until
from tests.support.tunnel import DIRECT, NodeProcess


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClusterHarness, str]]:
    """A cluster of this module's own: node1 (in-process) and a joined node, both env=dev."""
    base = tmp_path_factory.mktemp("nodes")
    harness = ClusterHarness(base).start()
    name = unique("node2")
    node = NodeProcess(harness, base, name, "env=dev,fleet=joined", extra=DIRECT)
    try:
        node.start().wait_registered()
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
    node = NodeProcess(cluster, tmp_path, name, "fleet=gone", extra=DIRECT).start()
    node.wait_registered()
    alice = _user(two_nodes, "offline")
    try:
        assert alice.limen("ssh", name, "true").returncode == 0
    finally:
        node.stop(signal.SIGKILL)  # no goodbye: its entry stays until heartbeats lapse
    result = alice.limen("ssh", name, "true")
    assert result.returncode == 255
    assert f"node '{name}'" in result.stderr and "could not be reached" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_node_started_with_sigquit_ignored_starts_sessions_with_it_at_default(
    two_nodes: tuple[ClusterHarness, str], tmp_path: Path
) -> None:
    """A shell without job control starts background jobs with SIGQUIT ignored. The node
    catches it instead (and so still ignores it): an exec does not pass a caught signal
    on, so its sessions start with it at default without env resetting it."""
    cluster, _ = two_nodes
    name = unique("quiet")
    before = signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    try:
        node = NodeProcess(cluster, tmp_path, name, "fleet=quiet", extra=DIRECT).start()
    finally:
        signal.signal(signal.SIGQUIT, before)
    alice = _user(two_nodes, "quiet")
    try:
        node.wait_registered()
        assert node.proc is not None
        result = alice.limen("ssh", name, "grep -E '^SigIgn' /proc/self/status")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["SigIgn:", "0" * 16]
        quit_bit = 1 << (signal.SIGQUIT - 1)
        status = dict(line.split(":", 1) for line in
                      Path(f"/proc/{node.proc.pid}/status").read_text().splitlines())
        assert int(status["SigIgn"], 16) & quit_bit == 0  # not passed on to an exec
        assert int(status["SigCgt"], 16) & quit_bit  # caught: the node itself ignores it
        node.proc.send_signal(signal.SIGQUIT)
        assert alice.limen("ssh", name, "echo still-here").stdout == "still-here\n"
        node.check_alive()
    finally:
        node.stop()

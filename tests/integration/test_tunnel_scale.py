"""Fifty tunneled nodes (their agents in one process) are listed and reachable."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import ClusterHarness
from tests.support.processes import stop_process
from tests.support.ssh_access import SshUser, new_user, unique, wait_until

COUNT = 50
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClusterHarness, str]]:
    base = tmp_path_factory.mktemp("fleet")
    cluster = ClusterHarness(base).start()
    prefix = unique("t")
    proc: subprocess.Popen[bytes] | None = None
    try:
        token = cluster.admin("tokens", "add", "--type", "node", "--uses", str(COUNT),
                              "--format", "json")
        assert token.returncode == 0, token.stderr
        log = base / "agents.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.agents", "--proxy", cluster.web_addr,
                 "--token", token.json()["token"], "--count", str(COUNT), "--base",
                 str(base / "nodes"), "--prefix", f"{prefix}-", "--labels", f"fleet={prefix}"],
                cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def all_up() -> bool:
            assert proc is not None
            if proc.poll() is not None:
                raise AssertionError(f"the agents exited:\n{log.read_text()}")
            tunnels = cluster.service.tunnels
            return tunnels is not None and len(tunnels.directory) >= COUNT

        wait_until(all_up, 90, f"{COUNT} tunnels")
        yield cluster, prefix
    finally:
        if proc is not None:
            stop_process(proc, timeout=30, group=True)
        cluster.stop()


@pytest.fixture(scope="module")
def admin_user(fleet: tuple[ClusterHarness, str]) -> SshUser:
    return new_user(fleet[0], "fleet", logins="root")


def test_fifty_tunneled_nodes_are_listed(fleet: tuple[ClusterHarness, str],
                                          admin_user: SshUser) -> None:
    _, prefix = fleet
    listed = admin_user.limen("ls", f"fleet={prefix}", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    nodes = listed.json()
    assert len(nodes) == COUNT
    assert {n["connection"] for n in nodes} == {"tunnel"}
    assert all(n["online"] and n["since"] and n["last_heartbeat"] for n in nodes)
    assert all(n["addr"] == "" for n in nodes)


def test_fifty_tunneled_nodes_are_reachable(fleet: tuple[ClusterHarness, str],
                                             admin_user: SshUser) -> None:
    _, prefix = fleet
    result = admin_user.limen("ssh", f"root@fleet={prefix}", "echo up", timeout=110)
    assert result.returncode == 0, result.stderr
    lines = sorted(result.stdout.splitlines())
    assert lines == sorted(f"[{prefix}-{i:02d}] up" for i in range(COUNT))

"""The diagnostics address: a Prometheus scrape (parsed by the client library's own
parser) of a cluster that ran a session shows the counters moved; /healthz and /readyz
answer, and a joined node whose auth service went away is not ready, saying why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.cluster import ClusterHarness, default_config
from tests.support.metrics import scrape, value
from tests.support.ports import free_port
from tests.support.ssh_access import new_user, wait_until
from tests.support.tunnel import NodeProcess


@pytest.fixture
def diag_cluster(tmp_path: Path) -> Iterator[ClusterHarness]:
    config = default_config(tmp_path / "data", diag_addr="127.0.0.1:0")
    harness = ClusterHarness(tmp_path, config=config).start()
    yield harness
    harness.stop()


def test_a_scrape_after_a_session_shows_logins_and_sessions(
    diag_cluster: ClusterHarness,
) -> None:
    cluster = diag_cluster
    addr = cluster.service.diag_addr
    before = scrape(addr)
    person = new_user(cluster, "metered")
    ran = person.ssh("root@node1.test.limen", "echo", "counted")
    assert ran.returncode == 0, ran.stderr
    wait_until(lambda: value(scrape(addr), "limen_sessions_active", node="node1")
               <= value(before, "limen_sessions_active", node="node1"), 10,
               "the session to end")
    after = scrape(addr)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("limen_logins_total", result="success") >= 1
    assert moved("limen_certificates_issued_total") >= 1
    assert moved("limen_sessions_total", node="node1") >= 1
    assert moved("limen_session_setup_seconds_count") >= 1
    assert moved("limen_proxy_ssh_connections_total", result="allowed") >= 1
    assert moved("limen_audit_events_written_total") >= 1
    assert moved("limen_backend_operation_seconds_count", operation="get") >= 1
    assert ("limen_audit_queue_depth", ()) in after
    assert ("limen_tunnels_connected", ()) in after
    assert value(after, "process_resident_memory_bytes") > 0

    failed = cluster.try_login(person.home, person.name, "--insecure", otp="000000")
    assert failed.returncode == 1
    assert value(scrape(addr), "limen_logins_total", result="failure") > \
        value(after, "limen_logins_total", result="failure")


def test_health_and_readiness(diag_cluster: ClusterHarness) -> None:
    addr = diag_cluster.service.diag_addr
    assert httpx.get(f"http://{addr}/healthz", timeout=10).json() == {"status": "ok"}
    ready = httpx.get(f"http://{addr}/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "checks": {"backend": "ok", "listeners": "ok",
                                                      "auth": "ok"}}



def test_a_node_whose_auth_service_is_gone_is_not_ready(
    fresh_cluster: ClusterHarness, tmp_path: Path
) -> None:
    diag = f"127.0.0.1:{free_port()}"
    node = NodeProcess(fresh_cluster, tmp_path, "diag-node", extra=("--diag-addr", diag))
    node.start()
    try:
        node.wait_tunneled()
        ready = wait_until(lambda: _get(f"http://{diag}/readyz"), 30, "the node's /readyz")
        assert ready.status_code == 200, ready.text
        fresh_cluster.run(fresh_cluster.service.stop())
        gone = httpx.get(f"http://{diag}/readyz", timeout=10)
        assert gone.status_code == 503
        assert "cannot reach the auth service" in gone.json()["checks"]["auth"]
        assert httpx.get(f"http://{diag}/healthz", timeout=10).status_code == 200
    finally:
        node.stop()


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None

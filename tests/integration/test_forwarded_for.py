"""X-Forwarded-For counts only from configured proxies.

A client on the proxy's own host (or anywhere) that sends the header must not choose
the address audit events record, nor slip out of the per-address rate limit; behind a
load balancer listed in ``proxy.trusted_proxies`` the header names the real client.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest

from limen.client.trust import insecure_context
from tests.support.cluster import ClusterHarness, default_config

SPOOFED = "203.0.113.9"


def _cluster(base: Path, trusted: list[str]) -> ClusterHarness:
    config = default_config(base / "data")
    config.proxy.rate_limit.burst = 3
    config.proxy.rate_limit.average_per_minute = 1
    config.proxy.trusted_proxies = trusted
    return ClusterHarness(base, config=config).start()


@pytest.fixture
def untrusting(tmp_path: Path) -> Iterator[ClusterHarness]:
    harness = _cluster(tmp_path, [])
    yield harness
    harness.stop()


@pytest.fixture
def behind_a_proxy(tmp_path: Path) -> Iterator[ClusterHarness]:
    harness = _cluster(tmp_path, ["127.0.0.0/8"])
    yield harness
    harness.stop()


def _failed_login(cluster: ClusterHarness, user: str, forwarded_for: str) -> dict[str, Any]:
    """A login with a wrong password, sent with the header; its audit event."""
    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()
    body = {"user": user, "password": "not the password", "otp": "000000", "public_key": key}
    with httpx.Client(verify=insecure_context(), base_url=f"https://{cluster.web_addr}",
                      timeout=30) as http:
        answer = http.post("/v1/login", json=body, headers={"x-forwarded-for": forwarded_for})
    assert answer.status_code == 403
    [event] = cluster.events_of("user.login", user=user)
    return event


def _signup_statuses(cluster: ClusterHarness, forwarded_for: list[str]) -> list[int]:
    with httpx.Client(verify=insecure_context(), base_url=f"https://{cluster.web_addr}",
                      timeout=30) as http:
        return [
            http.post("/v1/signup/start", json={"token": "nope"},
                      headers={"x-forwarded-for": address}).status_code
            for address in forwarded_for
        ]


def test_a_spoofed_forwarded_for_changes_neither_the_audit_nor_the_rate_limit(
    untrusting: ClusterHarness,
) -> None:
    assert _failed_login(untrusting, "spoofer", SPOOFED)["addr.remote"] == "127.0.0.1"

    # Each request claims another address; all of them share the real one's bucket.
    statuses = _signup_statuses(untrusting, [f"198.51.100.{i}" for i in range(1, 6)])
    assert 429 in statuses


def test_behind_a_trusted_proxy_the_forwarded_client_is_recorded_and_limited(
    behind_a_proxy: ClusterHarness,
) -> None:
    assert _failed_login(behind_a_proxy, "forwarded", SPOOFED)["addr.remote"] == SPOOFED

    # One bucket per forwarded client: five clients pass, one client alone is limited.
    assert 429 not in _signup_statuses(behind_a_proxy, [f"198.51.100.{i}" for i in range(1, 6)])
    assert 429 in _signup_statuses(behind_a_proxy, ["192.0.2.77"] * 5)

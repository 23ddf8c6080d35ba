"""A login does the same work whether the user exists or not, so its timing cannot tell.

Tested without a clock: every bcrypt verification the cluster runs is observed (the
library's function, wrapped, still does the work), and an unknown user's login must run
exactly what a known user's wrong password runs: one verification at the real cost.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncssh
import bcrypt
import httpx
import pytest

from limen.auth import passwords
from limen.client.trust import insecure_context
from tests.support.cluster import ClusterHarness


def _cost(hashed: bytes) -> int:
    """bcrypt's cost factor, from the hash itself: $2b$COST$..."""
    return int(hashed.split(b"$")[2])


def test_the_dummy_hash_costs_what_a_real_password_hash_costs() -> None:
    real = passwords.hash_password("a real password of some length")
    assert _cost(passwords.dummy_hash()) == _cost(real) == passwords.ROUNDS


def _failed_login(cluster: ClusterHarness, user: str) -> int:
    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()
    body = {"user": user, "password": "wrong password!", "otp": "000000", "public_key": key}
    with httpx.Client(verify=insecure_context(), base_url=f"https://{cluster.web_addr}",
                      timeout=60) as http:
        return http.post("/v1/login", json=body).status_code


def test_an_unknown_user_costs_one_verification_like_a_wrong_password(
    cluster: ClusterHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster.create_user("timed", logins="timed")
    costs: list[int] = []
    checkpw: Callable[[bytes, bytes], bool] = bcrypt.checkpw

    def observed(password: bytes, hashed: bytes) -> bool:
        costs.append(_cost(hashed))
        return checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", observed)

    assert _failed_login(cluster, "timed") == 403
    known = list(costs)
    costs.clear()
    assert _failed_login(cluster, "nobody-by-this-name") == 403
    unknown = list(costs)

    assert known == [passwords.ROUNDS]
    assert unknown == known

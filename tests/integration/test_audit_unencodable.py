"""Text that cannot be written as UTF-8 (a lone surrogate, which JSON's \\uD800 escape
makes) must not reach the audit log from the network. The API refuses it when it parses
the request; the log itself refuses such an event alone (tests/audit/test_log.py). A
guard: the API refused it before the log learnt to."""

from __future__ import annotations

import httpx

from limen.client.trust import insecure_context
from tests.support.cluster import ClusterHarness

LONE_SURROGATE_LOGIN = (
    b'{"user": "mallory\\ud800", "password": "xxxxxxxxxxxx", "otp": "123456",'
    b' "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZhbHNlIGtleSBmb3IgYSB0ZXN0IG9ubHk="}'
)


def test_a_lone_surrogate_in_a_login_is_refused_and_the_log_goes_on(
    cluster: ClusterHarness,
) -> None:
    with httpx.Client(verify=insecure_context(), base_url=f"https://{cluster.web_addr}",
                      timeout=10) as http:
        answer = http.post("/v1/login", content=LONE_SURROGATE_LOGIN,
                           headers={"content-type": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["error"]["kind"] == "bad_parameter"
    assert "'user'" in answer.json()["error"]["message"]

    user = cluster.create_user("after-surrogate", logins="alice")
    assert cluster.login(user).returncode == 0
    assert cluster.events_of("user.login", user="after-surrogate", code="T1000I")

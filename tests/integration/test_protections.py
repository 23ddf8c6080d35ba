"""Lockout, token expiry, CA pinning, RBAC on admin commands, rate limits, bad input."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx

from limen.client.trust import insecure_context
from tests.support.cluster import PASSWORD, ClusterHarness, default_config


def test_five_failures_lock_the_user_until_unlocked(cluster: ClusterHarness) -> None:
    user = cluster.create_user("lockme", logins="lockme")
    for _ in range(5):
        assert cluster.login(user, password="definitely wrong!").returncode != 0
    locked = cluster.login(user)  # the right password and code
    assert locked.returncode != 0
    assert "locked until" in locked.stderr
    assert "limen users unlock lockme" in locked.stderr
    listed = cluster.admin("users", "ls", "--format", "json").json()
    record = next(u for u in listed if u["metadata"]["name"] == "lockme")
    assert record["status"]["locked_until"]
    assert "5 failed login attempts" in record["status"]["lock_reason"]

    assert cluster.admin("users", "unlock", "lockme").returncode == 0
    assert cluster.login(user).returncode == 0
    assert cluster.events_of("user.unlock", name="lockme")


def test_the_lock_lifts_after_thirty_minutes(fresh_cluster: ClusterHarness) -> None:
    user = fresh_cluster.create_user("patient", logins="patient")
    for _ in range(5):
        fresh_cluster.login(user, password="definitely wrong!")
    assert "locked until" in fresh_cluster.login(user).stderr
    fresh_cluster.clock.advance(timedelta(minutes=29))
    assert "locked until" in fresh_cluster.login(user).stderr
    fresh_cluster.clock.advance(timedelta(minutes=2))
    assert fresh_cluster.login(user).returncode == 0


def test_an_expired_signup_token_is_refused(fresh_cluster: ClusterHarness) -> None:
    token = fresh_cluster.add_user("late", logins="late")
    fresh_cluster.clock.advance(timedelta(hours=1, seconds=1))
    home = fresh_cluster.new_home()
    result = fresh_cluster.try_signup(token, home)
    assert result.returncode != 0
    assert "has expired" in result.stderr


def test_signup_token_ttl_is_capped(cluster: ClusterHarness) -> None:
    result = cluster.admin("users", "add", "toolong", "--ttl", "49h")
    assert result.returncode != 0
    assert "at most" in result.stderr


def test_reset_stops_the_old_password_at_once(cluster: ClusterHarness) -> None:
    user = cluster.create_user("resetme", logins="resetme")
    assert cluster.login(user).returncode == 0
    reset = cluster.admin("users", "reset", "resetme", "--format", "json")
    assert reset.returncode == 0, reset.stderr
    assert cluster.login(user).returncode != 0
    new_secret = cluster.signup(reset.json()["token"], user.home, password="a brand new password")
    user.secret, user.last_step = new_secret, cluster.current_step()
    assert cluster.login(user, password="a brand new password").returncode == 0


def test_users_rm_deletes_and_login_fails(cluster: ClusterHarness) -> None:
    user = cluster.create_user("gone", logins="gone")
    assert cluster.admin("users", "rm", "gone").returncode == 0
    names = [u["metadata"]["name"] for u in cluster.admin("users", "ls", "--format", "json").json()]
    assert "gone" not in names
    assert cluster.login(user).returncode != 0
    assert cluster.events_of("user.delete", name="gone")


def test_users_add_text_output_has_the_exact_signup_command(cluster: ClusterHarness) -> None:
    result = cluster.admin("users", "add", "textual", "--logins", "textual")
    assert result.returncode == 0
    assert "limen signup " in result.stdout
    assert f"--proxy {cluster.web_addr} --ca-pin sha256:" in result.stdout


def test_a_wrong_ca_pin_is_refused(cluster: ClusterHarness) -> None:
    home = cluster.new_home()
    result = cluster.cli(
        "login",
        "--proxy",
        cluster.web_addr,
        "--user",
        "alice",
        "--password-stdin",
        "--otp",
        "123456",
        "--ca-pin",
        "sha256:" + "0" * 64,
        home=home,
        input=PASSWORD + "\n",
    )
    assert result.returncode != 0
    assert "does not match the pin" in result.stderr
    assert not (home / "keys").exists() or not list((home / "keys").rglob("tls-ca.pem"))


def test_first_contact_without_pin_or_prompt_is_refused(cluster: ClusterHarness) -> None:
    home = cluster.new_home()
    result = cluster.try_login(home, "alice")
    assert result.returncode != 0
    assert "--ca-pin" in result.stderr


def test_a_stored_ca_that_no_longer_matches_is_refused_loudly(
    cluster: ClusterHarness, fresh_cluster: ClusterHarness
) -> None:
    user = cluster.create_user("pinned", logins="pinned")
    assert cluster.login(user).returncode == 0
    ca_file = next((user.home / "keys").rglob("tls-ca.pem"))
    other_ca = next((fresh_cluster.data_dir / "ca").glob("tls_ca.crt")).read_text()
    ca_file.write_text(other_ca)  # as if another cluster now answered at this address
    result = cluster.login(user, "--insecure")
    assert result.returncode != 0
    assert "cluster CA you trust did not sign" in result.stderr


def test_admin_commands_need_a_role_that_allows_them(cluster: ClusterHarness) -> None:
    user = cluster.create_user("plain", roles="access", logins="plain")
    assert cluster.login(user).returncode == 0
    refused = cluster.cli("users", "ls", home=user.home)
    assert refused.returncode != 0
    assert "may not list user" in refused.stderr
    assert cluster.events_of("access.denied", user="plain", resource="user")

    editor = cluster.create_user("ed", roles="editor", logins="ed")
    assert cluster.login(editor).returncode == 0
    allowed = cluster.cli("users", "ls", "--format", "json", home=editor.home)
    assert allowed.returncode == 0, allowed.stderr
    assert any(u["metadata"]["name"] == "plain" for u in allowed.json())


def test_admin_command_without_identity_says_what_to_do(cluster: ClusterHarness) -> None:
    home = cluster.new_home()
    result = cluster.cli("users", "ls", home=home, env={"LIMEN_DATA_DIR": str(home / "none")})
    assert result.returncode != 0
    assert "--data-dir" in result.stderr


def test_api_errors_are_json_without_traces(cluster: ClusterHarness) -> None:
    with httpx.Client(verify=insecure_context(), base_url=f"https://{cluster.web_addr}") as http:
        garbage = http.post("/v1/login", content=b"{not json")
        assert garbage.status_code == 400
        assert garbage.json()["error"]["kind"] == "bad_parameter"
        missing = http.post("/v1/login", json={"user": "x"})
        assert missing.status_code == 400
        assert "password" in missing.json()["error"]["message"]
        anonymous = http.get("/v1/users")
        assert anonymous.status_code == 403
        assert anonymous.json()["error"]["message"].startswith("this request needs a login")
        forged = http.get("/v1/users", headers={"authorization": "Bearer " + "ab" * 32})
        assert forged.status_code == 403
        bad_key = http.post(
            "/v1/login",
            json={
                "user": "alice",
                "password": "x" * 12,
                "otp": "123456",
                "public_key": "ssh-ed25519 AAAA",
            },
        )
        assert bad_key.status_code == 400
        for response in (garbage, missing, anonymous, forged, bad_key):
            assert "Traceback" not in response.text


def test_unauthenticated_endpoints_are_rate_limited(tmp_path: Path) -> None:
    config = default_config(tmp_path / "data")
    config.proxy.rate_limit.burst = 3
    config.proxy.rate_limit.average_per_minute = 1
    harness = ClusterHarness(tmp_path, config=config).start()
    try:
        with httpx.Client(
            verify=insecure_context(), base_url=f"https://{harness.web_addr}"
        ) as http:
            codes = [
                http.post("/v1/signup/start", json={"token": "nope"}).status_code for _ in range(4)
            ]
        assert codes[:3] == [403, 403, 403]
        assert codes[3] == 429
    finally:
        harness.stop()

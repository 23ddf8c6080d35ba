"""Users add -> signup -> login, driven through the CLI as a person would."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

from tests.support.cluster import PASSWORD, ClusterHarness


def test_signup_then_login_gives_a_certificate_openssh_reads(cluster: ClusterHarness) -> None:
    user = cluster.create_user("alice", roles="access", logins="alice,root")
    result = cluster.login(user)
    assert result.returncode == 0, result.stderr

    status = cluster.cli("status", "--format", "json", home=user.home).json()
    assert status["user"] == "alice"
    assert status["cluster"] == "test.limen"
    assert status["logins"] == ["alice", "root"]
    assert status["roles"] == ["access"]
    for key in ("proxy", "valid_until", "key_path", "cert_path", "known_hosts_path"):
        assert status[key]
    assert stat.S_IMODE(os.stat(status["key_path"]).st_mode) == 0o600

    shown = subprocess.run(
        ["ssh-keygen", "-L", "-f", status["cert_path"]], capture_output=True, text=True, check=True
    ).stdout
    assert 'Key ID: "alice"' in shown
    assert "user certificate" in shown
    principals = shown.split("Principals:")[1].split("Critical Options:")[0].split()
    assert principals == ["alice", "root"]
    assert "permit-pty" in shown
    assert "permit-port-forwarding" in shown  # the access role allows it
    assert "roles@limen" in shown and "traits@limen" in shown

    known_hosts = Path(status["known_hosts_path"]).read_text()
    assert known_hosts.startswith("@cert-authority * ssh-ed25519 ")

    logins = cluster.events_of("user.login", user="alice", code="T1000I")
    assert logins and logins[-1]["method"] == "local"


def test_certificate_validity_is_one_minute_back_to_the_ttl(cluster: ClusterHarness) -> None:
    user = cluster.create_user("bob-ttl", logins="bob")
    assert cluster.login(user, "--ttl", "2h").returncode == 0
    status = cluster.cli("status", "--format", "json", home=user.home).json()
    shown = subprocess.run(
        ["ssh-keygen", "-L", "-f", status["cert_path"]], capture_output=True, text=True, check=True
    ).stdout
    valid = shown.split("Valid: from ")[1].split("\n")[0]
    start, _, end = valid.partition(" to ")
    from datetime import datetime

    span = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    assert 2 * 3600 + 50 <= span.total_seconds() <= 2 * 3600 + 70


def test_ttl_is_capped_by_the_cluster_maximum(cluster: ClusterHarness) -> None:
    user = cluster.create_user("carol-ttl", logins="carol")
    assert cluster.login(user, "--ttl", "100h").returncode == 0
    status = cluster.cli("status", "--format", "json", home=user.home).json()
    from datetime import datetime

    left = datetime.fromisoformat(status["valid_until"]) - cluster.clock.now()
    assert left.total_seconds() <= 30 * 3600


def test_user_without_logins_gets_one_principal_that_matches_nobody(
    cluster: ClusterHarness,
) -> None:
    user = cluster.create_user("nologin", roles="auditor")
    assert cluster.login(user).returncode == 0
    status = cluster.cli("status", "--format", "json", home=user.home).json()
    assert len(status["logins"]) == 1
    assert status["logins"][0].startswith("-limen-nologin-")


def test_wrong_password_and_wrong_code_are_refused(cluster: ClusterHarness) -> None:
    user = cluster.create_user("dave", logins="dave")
    bad_password = cluster.login(user, password="not the right password")
    assert bad_password.returncode != 0
    assert "invalid user name, password or second factor" in bad_password.stderr
    assert "Traceback" not in bad_password.stderr

    bad_code = cluster.login(
        user, otp="000000" if cluster.otp(user.secret) != "000000" else "111111"
    )
    assert bad_code.returncode != 0
    reasons = [e["error"] for e in cluster.events_of("user.login", user="dave", code="T1000W")]
    assert reasons == ["wrong password", "wrong TOTP code"]
    assert not (user.home / "keys").exists() or not any((user.home / "keys").rglob("dave-cert.pub"))


def test_a_code_cannot_be_used_twice(cluster: ClusterHarness) -> None:
    user = cluster.create_user("erin", logins="erin")
    code = cluster.next_otp(user)
    assert cluster.login(user, otp=code).returncode == 0
    again = cluster.login(user, otp=code)
    assert again.returncode != 0
    assert cluster.events_of("user.login", user="erin", error="TOTP code already used")


def test_unknown_user_is_refused_like_a_wrong_password(cluster: ClusterHarness) -> None:
    home = cluster.new_home()
    result = cluster.try_login(home, "nobody", "--insecure")
    assert result.returncode != 0
    assert "invalid user name, password or second factor" in result.stderr


def test_signup_token_works_once(cluster: ClusterHarness) -> None:
    token = cluster.add_user("frank", logins="frank")
    home = cluster.new_home()
    cluster.signup(token, home)
    again = cluster.try_signup(token, home)
    assert again.returncode != 0
    assert "already used, it has expired" in again.stderr


def test_signup_refuses_a_short_password_and_keeps_the_token(cluster: ClusterHarness) -> None:
    token = cluster.add_user("gina", logins="gina")
    home = cluster.new_home()
    short = cluster.try_signup(token, home, "short")
    assert short.returncode != 0
    assert "at least 12 characters" in short.stderr
    named = cluster.try_signup(token, home, "gina")
    assert named.returncode != 0
    cluster.signup(token, home)  # the token still works after the refusals


def test_totp_secret_file_is_private(cluster: ClusterHarness) -> None:
    token = cluster.add_user("hank", logins="hank")
    home = cluster.new_home()
    cluster.signup(token, home)
    assert stat.S_IMODE(os.stat(home / "totp.secret").st_mode) == 0o600


def test_logout_removes_the_credentials(cluster: ClusterHarness) -> None:
    user = cluster.create_user("ivan", logins="ivan")
    assert cluster.login(user).returncode == 0
    status = cluster.cli("status", "--format", "json", home=user.home).json()
    assert cluster.cli("logout", home=user.home).returncode == 0
    assert not os.path.exists(status["key_path"])
    assert not os.path.exists(status["cert_path"])
    after = cluster.cli("status", home=user.home)
    assert after.returncode != 0 and "not logged in" in after.stderr


def test_login_adds_the_key_to_a_running_agent(cluster: ClusterHarness, tmp_path) -> None:
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        import time

        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.02)
        env = {"SSH_AUTH_SOCK": str(sock)}
        user = cluster.create_user("judy", logins="judy")
        result = cluster.cli(
            "login",
            "--proxy",
            cluster.web_addr,
            "--user",
            "judy",
            "--password-stdin",
            "--otp",
            cluster.next_otp(user),
            "--insecure",
            home=user.home,
            input=PASSWORD + "\n",
            env=env,
        )
        assert result.returncode == 0, result.stderr
        listed = subprocess.run(
            ["ssh-add", "-l"], env={**os.environ, **env}, capture_output=True, text=True
        )
        assert "judy@limen" in listed.stdout and "CERT" in listed.stdout
        assert cluster.cli("logout", home=user.home, env=env).returncode == 0
        listed = subprocess.run(
            ["ssh-add", "-l"], env={**os.environ, **env}, capture_output=True, text=True
        )
        assert "judy@limen" not in listed.stdout
    finally:
        agent.terminate()
        agent.wait(10)


def test_status_json_is_machine_readable(cluster: ClusterHarness) -> None:
    user = cluster.create_user("kate", logins="kate")
    assert cluster.login(user, "--format", "json").returncode == 0
    data = json.loads(cluster.cli("status", "--format", "json", home=user.home).stdout)
    assert isinstance(data["cluster"], str)

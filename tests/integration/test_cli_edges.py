"""Newcomer traps at the CLI's edges: --proxy in every pasted form, errors that say what
was tried, scp errors that name the file, status and logout that tell the truth."""

from __future__ import annotations

from pathlib import Path

from tests.support.cluster import PASSWORD, ClusterHarness
from tests.support.ssh_access import LOCAL_LOGIN, ensure_local_user, new_user


def test_login_accepts_the_banner_url_and_names_what_it_tried(cluster: ClusterHarness) -> None:
    user = cluster.create_user("urlpaster", logins="urlpaster")
    otp = cluster.next_otp(user)
    pasted = cluster.cli("login", "--proxy", f"https://{cluster.web_addr}/", "--user",
                         user.name, "--password-stdin", "--otp", otp, "--insecure",
                         home=user.home, input=PASSWORD + "\n")
    assert pasted.returncode == 0, pasted.stderr
    assert cluster.cli("status", home=user.home).returncode == 0

    unknown = cluster.cli("login", "--proxy", "proxy.invalid", "--user", user.name,
                          "--password-stdin", "--otp", otp, "--insecure", home=user.home,
                          input=PASSWORD + "\n")
    assert unknown.returncode == 1
    assert "https://proxy.invalid:3080" in unknown.stderr  # the port it tried
    assert "does not resolve" in unknown.stderr

    port = int(cluster.web_addr.rsplit(":", 1)[1])
    closed = cluster.cli("login", "--proxy", f"127.0.0.1:{port + 1 if port < 65535 else 1}",
                         "--user", user.name, "--password-stdin", "--otp", otp, "--insecure",
                         home=user.home, input=PASSWORD + "\n")
    assert closed.returncode == 1
    assert "connection refused" in closed.stderr or "cannot reach" in closed.stderr
    assert "127.0.0.1:" in closed.stderr


def test_scp_errors_name_the_file(cluster: ClusterHarness, tmp_path: Path) -> None:
    ensure_local_user()
    person = new_user(cluster, "scpnames")
    local = tmp_path / "payload.txt"
    local.write_text("data\n")
    denied = person.limen("scp", str(local), f"{LOCAL_LOGIN}@node1:/root/payload.txt")
    assert denied.returncode == 1
    assert "node1:/root/payload.txt: permission denied" in denied.stderr
    assert f"copying {local}" in denied.stderr
    missing = person.limen("scp", "root@node1:/nonexistent/file", str(tmp_path / "x"))
    assert missing.returncode == 1
    assert "node1:/nonexistent/file: no such file" in missing.stderr
    several = person.limen("scp", str(local), str(local), "root@node1:/etc/hostname")
    assert several.returncode == 1
    assert "node1:/etc/hostname is not a directory" in several.stderr


def test_status_with_an_expired_certificate_exits_1(fresh_cluster: ClusterHarness) -> None:
    cluster = fresh_cluster
    cluster.clock.advance(-13 * 3600)  # signed up and logged in 13 h ago (12 h default)
    try:
        user = cluster.create_user("expiring", logins="expiring")
        assert cluster.login(user).returncode == 0
    finally:
        cluster.clock.advance(13 * 3600)
    status = cluster.cli("status", home=user.home)
    assert status.returncode == 1
    assert "EXPIRED" in status.stdout
    assert "your certificate expired" in status.stderr and "limen login" in status.stderr


def test_logout_when_not_logged_in_is_not_an_error(cluster: ClusterHarness) -> None:
    home = cluster.new_home()
    result = cluster.cli("logout", home=home)
    assert result.returncode == 0, result.stderr
    assert "Not logged in" in result.stdout

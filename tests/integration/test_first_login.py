"""Newcomer trap 1: a first login right after `limen signup` works, in the same 30 s
step, through the real CLI, for a script (--totp-secret-out) and for a person who typed
the code their app showed; a spent code never counts toward the lockout."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pexpect
import pytest

from limen import totp
from limen.clock import FakeClock
from tests.support.cluster import PASSWORD, ClusterHarness


@pytest.fixture
def still_cluster(tmp_path: Path) -> Iterator[ClusterHarness]:
    """A cluster whose clock moves only when the test moves it: where a signup falls in
    its 30 s step is then the test's choice, not the machine's speed."""
    harness = ClusterHarness(tmp_path, clock=FakeClock()).start()
    yield harness
    harness.stop()


def _at_offset(cluster: ClusterHarness, seconds_into_step: float) -> None:
    """Move the cluster's clock so that it is ``seconds_into_step`` into a TOTP step."""
    now = cluster.clock.now().timestamp()
    into = now % totp.STEP_SECONDS
    cluster.clock.advance((seconds_into_step - into) % totp.STEP_SECONDS)


def _login_now(cluster: ClusterHarness, home: Path, name: str, secret: str):
    """`limen login` with the code the authenticator shows at the server's time."""
    return cluster.try_login(home, name, "--insecure", otp=cluster.otp(secret))


def test_a_script_logs_in_right_after_signup(still_cluster: ClusterHarness) -> None:
    cluster = still_cluster
    _at_offset(cluster, 5)
    token = cluster.add_user("scripted", logins="scripted")
    home = cluster.new_home()
    secret = cluster.signup(token, home)
    login = _login_now(cluster, home, "scripted", secret)  # the same step as the signup
    assert login.returncode == 0, login.stderr
    assert not cluster.events_of("user.login", user="scripted", success=False)


def test_a_script_near_the_end_of_a_step_waits_for_the_next(
    still_cluster: ClusterHarness,
) -> None:
    cluster = still_cluster
    _at_offset(cluster, totp.STEP_SECONDS - 2)  # the previous code could arrive too late
    token = cluster.add_user("latecomer", logins="latecomer")
    home = cluster.new_home()
    env = {**os.environ, "LIMEN_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "limen.cli.main", "signup", token, "--proxy", cluster.web_addr,
         "--insecure", "--password-stdin", "--totp-secret-out", str(home / "totp.secret")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env,
    )
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write(PASSWORD + "\n")
    proc.stdin.close()
    said = proc.stderr.readline()
    assert "waiting 2 s for your authenticator's next code" in said  # it says why
    cluster.clock.advance(2)
    assert proc.wait(30) == 0
    assert proc.stdout is not None
    with proc.stdout, proc.stderr:
        assert "Now run:" in proc.stdout.read()
    secret = (home / "totp.secret").read_text().strip()
    login = _login_now(cluster, home, "latecomer", secret)
    assert login.returncode == 0, login.stderr


def test_a_person_who_typed_the_current_code_is_told_to_wait_and_then_logs_in(
    still_cluster: ClusterHarness,
) -> None:
    cluster = still_cluster
    _at_offset(cluster, 3)
    token = cluster.add_user("typist", logins="typist")
    home = cluster.new_home()
    env = {**os.environ, "LIMEN_HOME": str(home)}
    env.pop("SSH_AUTH_SOCK", None)
    child = pexpect.spawn(
        sys.executable, ["-m", "limen.cli.main", "signup", token, "--proxy", cluster.web_addr,
                         "--insecure"], env=env, encoding="utf-8", timeout=30,
    )
    try:
        child.expect("New password")
        child.sendline(PASSWORD)
        child.expect("Repeat it")
        child.sendline(PASSWORD)
        child.expect(r"otpauth://totp/[^\s]*secret=([A-Z2-7]+)")
        secret = child.match.group(1)
        child.expect("6-digit code: ")
        child.sendline(cluster.otp(secret))  # what the app shows now
        child.expect(r"waiting (\d+) s for your authenticator's next code")
        # The authenticator's next code appears when the server's clock moves on.
        cluster.clock.advance(timedelta(seconds=totp.STEP_SECONDS).total_seconds())
        child.expect("Now run:")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    login = _login_now(cluster, home, "typist", secret)
    assert login.returncode == 0, login.stderr
    assert not cluster.events_of("user.login", user="typist", success=False)


def test_a_spent_code_is_refused_without_counting_toward_the_lockout(
    still_cluster: ClusterHarness,
) -> None:
    cluster = still_cluster
    _at_offset(cluster, 5)  # a still clock near a step's end would make signup wait forever
    user = cluster.create_user("replayer", logins="replayer")
    code = cluster.next_otp(user)
    first = cluster.login(user, otp=code)
    assert first.returncode == 0, first.stderr
    for _ in range(cluster.config.auth.lockout_attempts + 1):
        again = cluster.login(user, otp=code)
        assert again.returncode == 1
        assert "invalid user name, password or second factor" in again.stderr
    # Not locked: the next code works.
    assert cluster.login(user).returncode == 0
    spent = cluster.events_of("user.login", user="replayer", success=False)
    assert spent and all(e["error"] == "TOTP code already used" for e in spent)

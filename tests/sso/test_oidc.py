"""Signing in through an OpenID Connect provider (oidc-provider, started by the tests)."""

from __future__ import annotations

import json
import subprocess

from tests.sso.conftest import SSOSetup
from tests.support.ssh_access import NODE, clean_env


def test_a_user_in_a_mapped_group_signs_in_and_reaches_a_node_with_stock_ssh(
    sso: SSOSetup,
) -> None:
    home = sso.cluster.new_home()
    result = sso.cli_login(home, "alice", "okta", "--format", "json")
    assert result.returncode == 0, result.stderr + sso.browser_log(home)
    status = json.loads(result.stdout)
    assert status["user"] == "alice@example.com"
    assert status["roles"] == ["access"]
    assert "limen-test" in status["logins"]
    shown = subprocess.run(["ssh-keygen", "-L", "-f", status["cert_path"]],
                           capture_output=True, text=True, check=True).stdout
    assert 'Key ID: "alice@example.com"' in shown

    printed = sso.cluster.cli("config", home=home)
    assert printed.returncode == 0, printed.stderr
    config = home / "ssh_config"
    config.write_text(printed.stdout)
    ran = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes",
                          f"limen-test@{NODE}", "echo", "hello-from-sso"],
                         capture_output=True, text=True, env=clean_env(), timeout=60,
                         stdin=subprocess.DEVNULL)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "hello-from-sso"

"""Structured logs: `limen start --log-format json` writes one JSON object per line (time,
level, component, message, and the request or session id where known), and the logs of
a whole session run (signup, login, ssh, scp), at debug level, hold no secret."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from limen import totp
from tests.support.cluster import PASSWORD
from tests.support.daemon import LIMEN, Running


def _limen(home: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    env["LIMEN_HOME"] = str(home)
    result = subprocess.run([*LIMEN, *args], capture_output=True, text=True, env=env,
                            input=input, timeout=60)
    assert result.returncode == 0, result.stderr
    return result


def _secret_lines(path: Path) -> list[str]:
    """The lines of a key file that carry key material (not the BEGIN/END markers)."""
    return [line for line in path.read_text().splitlines()
            if len(line) >= 16 and not line.startswith("-----")]


def test_a_session_run_logs_json_lines_without_secrets(tmp_path: Path) -> None:
    data, home = tmp_path / "data", tmp_path / "home"
    config = tmp_path / "limen.yaml"
    config.write_text(
        f"cluster_name: logs.limen\ndata_dir: {data}\n"
        "proxy:\n  web_listen_addr: 127.0.0.1:0\n  ssh_listen_addr: 127.0.0.1:0\n"
        "  tunnel_listen_addr: 127.0.0.1:0\n"
        "ssh:\n  listen_addr: 127.0.0.1:0\n  name: lognode\n"
    )
    running = Running(config, data, tmp_path / "limen.log", "--log-format", "json",
                      "--log-level", "debug")
    try:
        web = running.run_file()["web_addr"]
        added = _limen(home, "users", "add", "alice", "--roles", "access", "--logins", "root",
                       "--format", "json", "--data-dir", str(data))
        signup_token = json.loads(added.stdout)["token"]
        _limen(home, "signup", signup_token, "--proxy", web, "--insecure", "--password-stdin",
               "--totp-secret-out", str(home / "totp"), input=PASSWORD + "\n")
        secret = (home / "totp").read_text().strip()
        _limen(home, "login", "--proxy", web, "--user", "alice", "--password-stdin",
               "--otp", totp.code_at(secret, datetime.now(UTC)), input=PASSWORD + "\n")
        assert _limen(home, "ssh", "root@lognode", "echo", "logged").stdout == "logged\n"
        payload = tmp_path / "payload.txt"
        payload.write_text("copied\n")
        _limen(home, "scp", str(payload), "root@lognode:/tmp/limen-json-logs.txt")
    finally:
        running.stop()

    lines = running.text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    banner = [line for line in lines if not line.startswith("{")]
    assert all("Limen cluster" in b or b.startswith(" ") or b.startswith("Next")
               or b.startswith("and follow") for b in banner), banner
    assert records and all({"time", "level", "component", "message"} <= set(r)
                           for r in records)
    assert any(r.get("request_id") for r in records)
    assert any(r.get("session_id") and r["message"].startswith("session started")
               for r in records)
    assert any(r["level"] == "debug" for r in records)  # the level was in force

    text = running.text()
    keys = next((home / "keys").iterdir())
    secrets = {
        "password": [PASSWORD],
        "TOTP secret": [secret],
        "signup token": [signup_token],
        "API token": [(keys / "alice.token").read_text().strip()],
        "admin token": [(data / "admin.token").read_text().strip()],
        "user private key": _secret_lines(keys / "alice"),
        "user CA key": _secret_lines(data / "ca" / "user_ca"),
        "host CA key": _secret_lines(data / "ca" / "host_ca"),
    }
    for what, values in secrets.items():
        assert values, what
        for value in values:
            assert value not in text, f"the logs hold the {what}"

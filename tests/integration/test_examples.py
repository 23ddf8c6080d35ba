"""The systemd units and example configs under examples/: systemd itself accepts the units
(systemd-analyze verify), they restart on failure and reload with SIGHUP, and the configs
load as `limen start --config` reads them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from limen.config import load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("unit", ["limen.service", "limen-node.service"])
def test_systemd_accepts_the_unit(unit: str, tmp_path: Path) -> None:
    text = (EXAMPLES / unit).read_text()
    assert "Restart=on-failure" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text
    assert "StateDirectory=" in text
    # The unit names /opt/limen; verify it with this checkout's limen in its place.
    local = tmp_path / unit
    local.write_text(text.replace("/opt/limen/.venv/bin/limen",
                                  str(Path(sys.executable).parent / "limen")))
    verified = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True,
                              text=True, timeout=60)
    assert verified.returncode == 0, verified.stderr
    assert "Unknown key" not in verified.stderr and "Ignoring" not in verified.stderr, \
        verified.stderr


def test_the_hardened_unit_runs_unprivileged_in_a_sandbox() -> None:
    text = (EXAMPLES / "limen.service").read_text()
    for setting in ("User=limen", "NoNewPrivileges=yes", "ProtectSystem=strict",
                    "ReadWritePaths=/var/lib/limen", "ProtectHome=yes", "PrivateTmp=yes",
                    "CapabilityBoundingSet=CAP_NET_BIND_SERVICE"):
        assert setting in text


def test_the_example_configs_load() -> None:
    config = load_config(EXAMPLES / "limen.yaml")
    assert config.roles() == ["auth", "proxy"]
    assert config.diag_addr == "127.0.0.1:3000" and config.log_format == "json"
    assert "--config /etc/limen/limen.yaml" in (EXAMPLES / "limen.service").read_text()
    node = load_config(EXAMPLES / "node.yaml")
    assert node.roles() == ["node"] and node.ssh.proxy_addr

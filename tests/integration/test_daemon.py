"""`limen start` and `limen configure` as real processes; restarts keep state."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from limen.config import Config, load_config
from tests.support.cluster import ClusterHarness, default_config


def _limen(*args: str, home: Path, extra_env: dict[str, str] | None = None,
           **kwargs) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LIMEN_HOME": str(home), **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "limen.cli.main", *args], capture_output=True,
                          text=True, env=env, timeout=60, **kwargs)


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_configure_prints_a_config_that_start_accepts(tmp_path: Path) -> None:
    sample = _limen("configure", home=tmp_path)
    assert sample.returncode == 0
    path = tmp_path / "limen.yaml"
    path.write_text(sample.stdout)
    config = load_config(path)
    assert config.proxy.web_listen_addr == "0.0.0.0:3080"
    assert config.auth.listen_addr == "0.0.0.0:3025"
    assert config.ssh.listen_addr == "0.0.0.0:3022"
    assert config.storage.type == "sqlite"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("proxy:\n  web_listen_addr: 3080\n", "field 'proxy.web_listen_addr' (line 2)"),
        ("auth:\n  lockout_duration: soon\n", "field 'auth.lockout_duration' (line 2)"),
        ("storage:\n  type: oracle\n", "field 'storage.type' (line 2)"),
        ("cluster_name: x\nnonsense: 1\n", "field 'nonsense' (line 2): unknown field"),
        ("proxy: [\n", "line 2"),
    ],
)
def test_a_malformed_config_is_refused_naming_the_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = _limen("start", "--config", str(path), "--data-dir", str(tmp_path / "d"),
                    home=tmp_path)
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists()  # nothing was created


def test_start_runs_until_sigterm_and_restart_keeps_everything(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "limen.yaml"
    config.write_text(
        f"cluster_name: proc.limen\ndata_dir: {data}\n"
        "proxy:\n  web_listen_addr: 127.0.0.1:0\n  ssh_listen_addr: 127.0.0.1:0\n"
        "  tunnel_listen_addr: 127.0.0.1:0\n"
        "ssh:\n  enabled: false\n"
    )
    env = {**os.environ, "LIMEN_HOME": str(tmp_path / "home")}
    env.pop("LIMEN_EVENT_LOOP", None)

    def start(**extra_env: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-m", "limen.cli.main", "start", "--config",
                                 str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**env, **extra_env})
        _wait_for(data / "run.json", proc)
        return proc

    def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0
        return out, err

    first = start()
    added = _limen("users", "add", "alice", "--logins", "alice", "--format", "json",
                   "--config", str(config), home=tmp_path / "home")
    assert added.returncode == 0, added.stderr
    out, err = stop(first)
    assert "limen users add" in out  # it told the operator what to do next
    assert "event loop: uvloop" in err
    assert not (data / "run.json").exists()

    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    for key in ("user_ca", "host_ca", "tls_ca.key"):
        assert stat.S_IMODE(os.stat(data / "ca" / key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(data / "admin.token").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(data / "backend.sqlite").st_mode) == 0o600
    user_ca = (data / "ca" / "user_ca").read_bytes()

    second = start(LIMEN_EVENT_LOOP="asyncio")  # the way out of uvloop serves as well
    try:
        listed = _limen("users", "ls", "--format", "json", "--data-dir", str(data),
                        home=tmp_path / "home")
        assert listed.returncode == 0, listed.stderr
        assert [u["metadata"]["name"] for u in json.loads(listed.stdout)] == ["alice"]
        # The signup token issued before the restart still works: state is on disk.
        web_addr = json.loads((data / "run.json").read_text())["web_addr"]
        signup = _limen("signup", json.loads(added.stdout)["token"], "--proxy", web_addr,
                        "--insecure", "--password-stdin", "--totp-secret-out",
                        str(tmp_path / "secret"), home=tmp_path / "home",
                        input="correct horse battery\n")
        assert signup.returncode == 0, signup.stderr
    finally:
        _out, err = stop(second)
    assert "event loop: asyncio" in err
    assert (data / "ca" / "user_ca").read_bytes() == user_ca


def test_an_unknown_event_loop_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    result = _limen("start", "--data-dir", str(tmp_path / "d"), home=tmp_path,
                    extra_env={"LIMEN_EVENT_LOOP": "tornado"})
    assert result.returncode != 0
    assert "LIMEN_EVENT_LOOP='tornado' is not one of uvloop, asyncio" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists()


def test_restart_keeps_users_and_cas_in_process(tmp_path: Path) -> None:
    config = default_config(tmp_path / "data")
    first = ClusterHarness(tmp_path, config=config).start()
    try:
        user = first.create_user("keeper", logins="keeper")
        host_ca = (first.data_dir / "ca" / "host_ca").read_bytes()
    finally:
        first.stop()
    second = ClusterHarness(
        tmp_path, config=Config.model_validate(config.model_dump()), clock=first.clock
    ).start()
    try:
        assert second.login(user).returncode == 0
        assert (second.data_dir / "ca" / "host_ca").read_bytes() == host_ca
    finally:
        second.stop()


def test_a_data_dir_cannot_change_cluster(tmp_path: Path) -> None:
    config = default_config(tmp_path / "data")
    ClusterHarness(tmp_path, config=config).start().stop()
    other = default_config(tmp_path / "data")
    other.cluster_name = "another.name"
    harness = ClusterHarness(tmp_path, config=other)
    with pytest.raises(Exception, match="belongs to cluster 'test.limen'"):
        harness.start()

"""Crashes lose nothing acknowledged: `limen start` processes killed with SIGKILL during an
interactive session.

- The node dies: after its restart the session's end is in the log, marked interrupted,
  and its recording is readable (asciinema cat) up to the last output before the kill.
- The auth service (with the proxy) dies: every event it had acknowledged is still in the
  log and the chain verifies; what the node saw meanwhile (the session ending) waited on
  the node's disk and arrives once the auth service is back, with the recording.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pexpect
import pytest

from limen import totp
from tests.support.cluster import PASSWORD, CLIResult
from tests.support.ports import free_ports
from tests.support.ssh_access import clean_env, wait_until

CLUSTER = "crash.limen"
PROMPT = "CRASH-PROMPT> "



class Daemon:
    """One `limen start` process in a process group of its own (its shells included)."""

    def __init__(self, argv: list[str], log: Path, ready: Any) -> None:
        self.argv, self.log, self.ready = argv, log, ready
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "limen.cli.main", "start", *self.argv],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self._ready, 30, f"{self.argv} to start")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"limen start exited:\n{self.log.read_text()}")
        return bool(self.ready())

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class ProcessCluster:
    """auth + proxy in one process and a node joined with a token in another, on fixed
    ports so that either can restart where the other expects it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.auth_dir = base / "auth"
        self.node_dir = base / "node"
        web_port, self.node_port, ssh_port, tunnel_port = free_ports(4)
        self.web_addr = f"127.0.0.1:{web_port}"
        config = base / "limen.yaml"
        config.write_text(
            f"cluster_name: {CLUSTER}\ndata_dir: {self.auth_dir}\n"
            f"proxy:\n  web_listen_addr: {self.web_addr}\n"
            f"  ssh_listen_addr: 127.0.0.1:{ssh_port}\n"
            f"  tunnel_listen_addr: 127.0.0.1:{tunnel_port}\n"
            "  rate_limit: {average_per_minute: 100000, burst: 100000}\n"
            "  node_networks: [127.0.0.0/8]\n"
            "audit:\n  checkpoint_interval: 2s\n"
            "ssh:\n  enabled: false\n"
        )
        self.config = config
        self.auth = Daemon(["--config", str(config)], base / "auth.log",
                           lambda: (self.auth_dir / "run.json").exists())
        self.node: Daemon | None = None

    def cli(self, *args: str, home: Path | None = None, input: str | None = None) -> CLIResult:
        env = {**os.environ, "LIMEN_HOME": str(home or self.base / "admin-home")}
        env.pop("SSH_AUTH_SOCK", None)
        proc = subprocess.run([sys.executable, "-m", "limen.cli.main", *args], input=input,
                              capture_output=True, text=True, env=env, timeout=60)
        return CLIResult(proc.returncode, proc.stdout, proc.stderr)

    def admin(self, *args: str) -> CLIResult:
        return self.cli(*args, "--data-dir", str(self.auth_dir))

    def start_node(self) -> None:
        token = self.admin("tokens", "add", "--type", "node", "--format", "json")
        assert token.returncode == 0, token.stderr
        addr = f"127.0.0.1:{self.node_port}"
        self.node = Daemon(
            ["--roles", "node", "--token", token.json()["token"], "--proxy", self.web_addr,
             "--insecure", "--name", "crashnode", "--labels", "env=crash",
             "--listen-addr", addr, "--advertise-addr", addr, "--data-dir", str(self.node_dir)],
            self.base / "node.log", self._node_listed,
        ).start()

    def _node_listed(self) -> bool:
        nodes = self.admin("get", "nodes", "--format", "json")
        return nodes.returncode == 0 and "crashnode" in nodes.stdout

    def events(self) -> list[dict[str, Any]]:
        found = []
        for path in sorted((self.auth_dir / "log" / "events").glob("*.log")):
            for line in path.read_text().splitlines(keepends=True):
                if line.endswith("\n"):
                    found.append(json.loads(line))
        return found

    def events_of(self, name: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.events()
                if e["event"] == name and all(e.get(k) == v for k, v in match.items())]

    def recording(self, sid: str) -> dict[str, Any] | None:
        listed = self.admin("recordings", "ls", "--format", "json")
        if listed.returncode != 0:
            return None
        return next((r for r in listed.json() if r["session_id"] == sid), None)

    def user(self, name: str) -> Path:
        """Create, sign up and log in a user; returns its home with an ssh config."""
        home = self.base / f"home-{name}"
        home.mkdir()
        added = self.admin("users", "add", name, "--roles", "access", "--logins", "root",
                           "--format", "json")
        assert added.returncode == 0, added.stderr
        secret_file = home / "totp.secret"
        signup = self.cli("signup", added.json()["token"], "--proxy", self.web_addr,
                          "--insecure", "--password-stdin", "--totp-secret-out",
                          str(secret_file), home=home, input=PASSWORD + "\n")
        assert signup.returncode == 0, signup.stderr
        # The signup spent this step's code; the next step's is accepted (skew of one).
        later = datetime.now(UTC) + timedelta(seconds=totp.STEP_SECONDS)
        code = totp.code_at(secret_file.read_text().strip(), later)
        login = self.cli("login", "--proxy", self.web_addr, "--user", name, "--insecure",
                         "--password-stdin", "--otp", code, home=home, input=PASSWORD + "\n")
        assert login.returncode == 0, login.stderr
        config = self.cli("config", home=home)
        assert config.returncode == 0, config.stderr
        (home / "ssh_config").write_text(config.stdout)
        return home

    def shell(self, home: Path) -> pexpect.spawn:
        child = pexpect.spawn(
            "ssh", ["-F", str(home / "ssh_config"), "-o", "BatchMode=yes", "-tt",
                    f"root@crashnode.{CLUSTER}"],
            env=clean_env(TERM="xterm"), dimensions=(24, 80), timeout=30, encoding="utf-8",
            codec_errors="replace",
        )
        child.sendline(f"PS1='{PROMPT}'; export PS1")
        child.expect_exact(PROMPT)
        child.expect_exact(PROMPT)
        return child

    def export_and_cat(self, sid: str) -> str:
        exported = self.admin("play", sid, "--format", "asciicast")
        assert exported.returncode == 0, exported.stderr
        cast = self.base / f"{sid}.cast"
        cast.write_text(exported.stdout)
        shown, status = pexpect.run(f"asciinema cat {cast}", withexitstatus=True, timeout=30,
                                    env={**clean_env(HOME=str(self.base)), "LC_ALL": "C.UTF-8"},
                                    encoding="utf-8")
        assert status == 0, shown
        return shown

    def verify(self) -> CLIResult:
        return self.admin("audit", "verify")

    def stop(self) -> None:
        if self.node is not None:
            self.node.kill(signal.SIGTERM)
        self.auth.kill(signal.SIGTERM)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[ProcessCluster]:
    cluster = ProcessCluster(tmp_path)
    try:
        cluster.auth.start()
        cluster.start_node()
        yield cluster
    finally:
        cluster.stop()


def _session(cluster: ProcessCluster, child: pexpect.spawn, marker: str) -> str:
    child.sendline(f"echo {marker}-$((40+2))")
    child.expect_exact(f"{marker}-42")
    child.expect_exact(PROMPT)
    start = wait_until(lambda: cluster.events_of("session.start", server_hostname="crashnode"),
                       10, "session.start")[-1]
    return str(start["sid"])


def test_a_node_killed_mid_session_leaves_an_interrupted_end_and_its_recording(
    processes: ProcessCluster,
) -> None:
    home = processes.user("nodekill")
    child = processes.shell(home)
    marker = f"before-kill-{uuid.uuid4().hex[:6]}"
    try:
        sid = _session(processes, child, marker)
        child.setwinsize(30, 100)
        wait_until(lambda: processes.events_of("resize", sid=sid), 10, "the resize event")
        # The output reached the auth service while the session ran.
        wait_until(lambda: (processes.recording(sid) or {}).get("size", 0) > 0, 10,
                   "the live recording upstream")
        acknowledged = {e["uid"] for e in processes.events()}
        assert processes.node is not None
        processes.node.kill(signal.SIGKILL)
        child.expect(pexpect.EOF)
    finally:
        child.close()
    processes.node.start()  # same data dir: its identity, journal and recordings

    end = wait_until(lambda: processes.events_of("session.end", sid=sid), 20,
                     "the interrupted session's end")[0]
    assert end["interrupted"] is True and end["user"] == "nodekill"
    assert end["session_stop"] and end["session_start"]
    recording = wait_until(lambda: (r := processes.recording(sid)) and r["end"] and r, 20,
                           "the recording closed as interrupted")
    assert recording["interrupted"] is True and recording["complete"] is False
    assert f"{marker}-42" in processes.export_and_cat(sid)
    assert acknowledged <= {e["uid"] for e in processes.events()}
    verified = processes.verify()
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_an_auth_service_killed_mid_session_loses_nothing_acknowledged(
    processes: ProcessCluster,
) -> None:
    home = processes.user("authkill")
    child = processes.shell(home)
    marker = f"during-{uuid.uuid4().hex[:6]}"
    try:
        sid = _session(processes, child, marker)
        acknowledged = {e["uid"] for e in processes.events()}
        processes.auth.kill(signal.SIGKILL)  # the proxy with it: the session's path breaks
        child.expect(pexpect.EOF)
    finally:
        child.close()
    spool = processes.node_dir / "audit" / "events.spool"
    waiting = wait_until(lambda: spool.exists() and "session.end" in spool.read_text(), 20,
                         "the session's end waiting on the node's disk")
    assert waiting
    processes.auth.start()

    end = wait_until(lambda: processes.events_of("session.end", sid=sid), 30,
                     "the session's end, delivered late")[0]
    assert end["user"] == "authkill" and not end.get("interrupted")
    assert acknowledged <= {e["uid"] for e in processes.events()}
    assert len(processes.events_of("session.end", sid=sid)) == 1
    recording = wait_until(lambda: (r := processes.recording(sid)) and r["complete"] and r, 30,
                           "the complete recording")
    assert recording["size"] > 0
    assert f"{marker}-42" in processes.export_and_cat(sid)
    verified = processes.verify()
    assert verified.returncode == 0, verified.stdout + verified.stderr

"""A whole Limen cluster in a background thread, with a clock the test controls.

The CLI is run as a real subprocess against it, the way a person would.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import traceback
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from limen import totp
from limen.clock import FakeClock
from limen.config import Config, JoinOptions, NodeConfig
from limen.node.cluster.role import NodeRole
from limen.service import Service

T = TypeVar("T")
PASSWORD = "correct horse battery staple"


@dataclass
class CLIResult:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class LimenUser:
    name: str
    secret: str
    home: Path
    # The newest TOTP step this user has spent: the server accepts each step once.
    last_step: int = 0


class ClusterHarness:
    def __init__(self, base: Path, config: Config | None = None, clock: FakeClock | None = None):
        self.base = base
        self.clock = clock or FakeClock(follow_real_time=True)
        self.config = config or default_config(base / "data")
        self.service = Service(self.config, clock=self.clock)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._homes = 0
        self.extra_nodes: list[NodeRole] = []

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> ClusterHarness:
        self._thread.start()
        try:
            self.run(self.service.start())
        except BaseException:
            self._close_loop()
            raise
        return self

    def add_node(self, name: str, labels: dict[str, str]) -> NodeRole:
        """Another node in the cluster's process (same host, its own port and identity)."""
        config = NodeConfig(listen_addr="127.0.0.1:0", name=name, labels=labels)
        node = NodeRole(
            config, self.base / f"node-{name}", self.clock, self.service.auth, JoinOptions()
        )
        self.run(node.start())
        self.extra_nodes.append(node)
        return node

    def stop(self) -> None:
        try:
            for node in self.extra_nodes:
                self.run(node.stop())
            self.run(self.service.stop())
        finally:
            self._close_loop()

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine on the cluster's own event loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def loop_report(self, limit: int = 12) -> str:
        """What the cluster's event loop is doing: its thread's stack and where its
        longest-waiting tasks are (for a test's failure message when the cluster stalls)."""
        frame = sys._current_frames().get(self._thread.ident or -1)
        lines = ["cluster loop thread:"]
        if frame is not None:
            lines += [line.rstrip() for line in traceback.format_stack(frame)[-6:]]
        tasks = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
        lines.append(f"{len(tasks)} pending tasks; some of them:")
        for task in tasks[:limit]:
            stack = task.get_stack(limit=1)
            where = (f"{stack[0].f_code.co_filename}:{stack[0].f_lineno} "
                     f"{stack[0].f_code.co_name}") if stack else "?"
            lines.append(f"  {task.get_name()}: {where}")
        return "\n".join(lines)

    @property
    def data_dir(self) -> Path:
        return Path(self.config.data_dir)

    @property
    def admin_token(self) -> str:
        """The bootstrap admin's API token, as `limen start` wrote it (mode 0600)."""
        return (self.data_dir / "admin.token").read_text().strip()

    @property
    def web_addr(self) -> str:
        return self.service.web_addr

    @property
    def ssh_addr(self) -> str:
        """The proxy's SSH jump host, host:port."""
        return self.service.ssh_addr

    # -- the CLI -----------------------------------------------------------------
    def new_home(self) -> Path:
        self._homes += 1
        home = self.base / f"home{self._homes}"
        home.mkdir(mode=0o700)
        return home

    def cli(
        self,
        *args: str,
        home: Path | None = None,
        input: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> CLIResult:
        full_env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
        full_env["LIMEN_HOME"] = str(home or self.base / "default-home")
        full_env.update(env or {})
        proc = subprocess.run(
            [sys.executable, "-m", "limen.cli.main", *args],
            input=input,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
        )
        return CLIResult(proc.returncode, proc.stdout, proc.stderr)

    @staticmethod
    def cli_command() -> str:
        """The CLI as a shell command, for scripts a test hands to the CLI (an $EDITOR)."""
        return f"{sys.executable} -m limen.cli.main"

    def admin(self, *args: str, **kwargs: Any) -> CLIResult:
        return self.cli(*args, "--data-dir", str(self.data_dir), **kwargs)

    # -- people --------------------------------------------------------------------
    def add_user(self, name: str, roles: str = "access", logins: str = "") -> str:
        result = self.admin(
            "users", "add", name, "--roles", roles, "--logins", logins, "--format", "json"
        )
        assert result.returncode == 0, result.stderr
        return result.json()["token"]

    def try_signup(self, token: str, home: Path, password: str = PASSWORD) -> CLIResult:
        """`limen signup` as a script runs it (--password-stdin, --totp-secret-out)."""
        return self.cli(
            "signup",
            token,
            "--proxy",
            self.web_addr,
            "--insecure",
            "--password-stdin",
            "--totp-secret-out",
            str(home / "totp.secret"),
            home=home,
            input=password + "\n",
        )

    def signup(self, token: str, home: Path, password: str = PASSWORD) -> str:
        """Sign up; returns the TOTP secret."""
        result = self.try_signup(token, home, password)
        assert result.returncode == 0, result.stderr
        return (home / "totp.secret").read_text().strip()

    def try_login(self, home: Path, user: str, *flags: str, otp: str = "123456") -> CLIResult:
        """`limen login` with exactly the trust flags given (none: no --insecure)."""
        return self.cli(
            "login",
            "--proxy",
            self.web_addr,
            "--user",
            user,
            "--password-stdin",
            "--otp",
            otp,
            *flags,
            home=home,
            input=PASSWORD + "\n",
        )

    def otp(self, secret: str) -> str:
        return totp.code_at(secret, self.clock.now())

    def current_step(self) -> int:
        return int(self.clock.now().timestamp()) // totp.STEP_SECONDS

    def next_otp(self, user: LimenUser) -> str:
        """A code from a step this user has not spent (for tests that pass --otp)."""
        step, _moved = self._unspent_step(user)
        user.last_step = step
        return self._code(user, step)

    @staticmethod
    def _code(user: LimenUser, step: int) -> str:
        return totp.code_at(user.secret, datetime.fromtimestamp(step * totp.STEP_SECONDS, UTC))

    def _unspent_step(self, user: LimenUser) -> tuple[int, float]:
        """The next step this user may spend, and how far the clock moved to allow it.

        The server allows one step of skew ahead, so the next step's code is valid now;
        only a third login within 30 s needs the clock moved.
        """
        current = self.current_step()
        step = max(current, user.last_step + 1)
        moved = max(0, step - current - totp.SKEW_STEPS) * totp.STEP_SECONDS
        if moved:
            self.clock.advance(moved)
        return step, moved

    def create_user(self, name: str, roles: str = "access", logins: str = "") -> LimenUser:
        home = self.new_home()
        secret = self.signup(self.add_user(name, roles, logins), home)
        return LimenUser(name, secret, home, last_step=self.current_step())

    def login(
        self, user: LimenUser, *extra: str, password: str = PASSWORD, otp: str | None = None
    ) -> CLIResult:
        """Log in through the CLI; a failed attempt spends no TOTP step.

        When the clock had to move for a fresh TOTP step it moves back afterwards: the
        shared cluster's clock must stay near real time, because real clients (ssh,
        asyncssh) check the certificates it stamps against the wall clock.
        """
        step, moved = None, 0.0
        if otp is None:
            step, moved = self._unspent_step(user)
            otp = self._code(user, step)
        try:
            result = self.cli(
                "login",
                "--proxy",
                self.web_addr,
                "--user",
                user.name,
                "--password-stdin",
                "--otp",
                otp,
                "--insecure",
                *extra,
                home=user.home,
                input=password + "\n",
            )
        finally:
            if moved:
                self.clock.advance(-moved)
        if step is not None and result.returncode == 0:
            user.last_step = step
        return result

    def events(self) -> list[dict[str, Any]]:
        assert self.service.auth is not None
        return self.service.auth.ctx.audit.read_all()

    def events_of(self, event: str, /, **match: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events()
            if e["event"] == event and all(e.get(k) == v for k, v in match.items())
        ]


def default_config(data_dir: Path, **overrides: Any) -> Config:
    config = Config.model_validate(
        {
            "cluster_name": "test.limen",
            "data_dir": str(data_dir),
            "proxy": {
                "web_listen_addr": "127.0.0.1:0",
                "ssh_listen_addr": "127.0.0.1:0",
                "tunnel_listen_addr": "127.0.0.1:0",
                # Many tests share one address; the limiter has its own test.
                "rate_limit": {"average_per_minute": 100000, "burst": 100000},
                # Test nodes run on this host and advertise 127.0.0.1; attack tests
                # that need loopback refused build clusters without this.
                "node_networks": ["127.0.0.0/8"],
            },
            "ssh": {"listen_addr": "127.0.0.1:0", "name": "node1", "labels": {"env": "dev"}},
        }
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return config

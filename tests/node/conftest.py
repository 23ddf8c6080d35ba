"""A real NodeServer on 127.0.0.1, driven by stock OpenSSH clients.

The node runs on its own event loop in a background thread, so tests can call the
blocking ``ssh``/``scp``/``sftp`` binaries (and pexpect) directly while the server keeps
serving. Everything the tests read from the server goes through thread-safe helpers.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from limen.clock import Clock, FakeClock
from limen.node import CertPolicy, ManualTimers, NodeServer, NodeSettings
from limen.node.ssh.policy import NodePolicy
from tests.support.event_shapes import node_problem

TEST_USER = "limen-test"


# -- keys and certificates ---------------------------------------------------------


@dataclass
class Pki:
    dir: Path
    user_ca: asyncssh.SSHKey
    host_ca: asyncssh.SSHKey
    host_key: asyncssh.SSHKey
    host_cert: asyncssh.SSHCertificate
    known_hosts: Path


def make_pki(base: Path) -> Pki:
    base.mkdir(parents=True, exist_ok=True)
    user_ca = asyncssh.generate_private_key("ssh-ed25519")
    host_ca = asyncssh.generate_private_key("ssh-ed25519")
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    host_cert = host_ca.generate_host_certificate(
        host_key, "test-node", principals=["127.0.0.1", "localhost", "test-node"],
        valid_after=int(time.time()) - 60, valid_before=int(time.time()) + 3600,
    )
    known_hosts = base / "known_hosts"
    ca_line = host_ca.export_public_key().decode().strip()
    known_hosts.write_text(f"@cert-authority * {ca_line}\n")
    return Pki(base, user_ca, host_ca, host_key, host_cert, known_hosts)


@dataclass
class Credentials:
    key: Path
    cert: Path | None


def write_user_cert(
    pki: Pki,
    name: str,
    *,
    principals: tuple[str, ...] = ("root", TEST_USER),
    ca: asyncssh.SSHKey | None = None,
    valid_after: float | None = None,
    valid_before: float | None = None,
    port_forwarding: bool = True,
    agent_forwarding: bool = True,
    pty: bool = True,
) -> Credentials:
    """A fresh key and a certificate for it, in files stock ssh reads."""
    now = time.time()
    key = asyncssh.generate_private_key("ssh-ed25519")
    cert = (ca or pki.user_ca).generate_user_certificate(
        key, name, principals=list(principals),
        valid_after=int(valid_after if valid_after is not None else now - 60),
        valid_before=int(valid_before if valid_before is not None else now + 3600),
        permit_port_forwarding=port_forwarding, permit_agent_forwarding=agent_forwarding,
        permit_pty=pty, permit_x11_forwarding=False,
    )
    key_path = pki.dir / f"{name}.key"
    key.write_private_key(str(key_path))
    os.chmod(key_path, 0o600)
    cert_path = pki.dir / f"{name}.cert"  # not key-cert.pub: ssh must not find it by itself
    cert.write_certificate(str(cert_path))
    return Credentials(key_path, cert_path)


def write_plain_key(pki: Pki, name: str) -> Credentials:
    key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = pki.dir / f"{name}.key"
    key.write_private_key(str(key_path))
    os.chmod(key_path, 0o600)
    return Credentials(key_path, None)


# -- the audit trail ------------------------------------------------------------------


class RecordingObserver:
    """Keeps every event and output chunk; tests wait on conditions, never on sleeps."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.invalid: list[str] = []  # events the auth service would refuse, and why
        self.output: dict[str, bytearray] = {}
        self.streams: dict[str, set[str]] = {}  # which kinds of output each session sent
        self.recordings: list[str] = []  # sessions whose recording was opened
        self.unrecordable: str | None = None  # set: every recording fails to open, so
        self._cond = threading.Condition()

    async def on_event(self, name: str, fields: dict[str, Any]) -> None:
        problem = node_problem(name, fields)
        with self._cond:
            if problem is not None:
                self.invalid.append(problem)
            self.events.append((name, dict(fields)))
            self._cond.notify_all()

    async def open_recording(self, session_id: str, fields: dict[str, Any]) -> str | None:
        with self._cond:
            if self.unrecordable is None:
                self.recordings.append(session_id)
            return self.unrecordable

    async def on_session_output(self, session_id: str, data: bytes, stream: str) -> None:
        with self._cond:
            self.output.setdefault(session_id, bytearray()).extend(data)
            self.streams.setdefault(session_id, set()).add(stream)
            self._cond.notify_all()

    def named(self, name: str) -> list[dict[str, Any]]:
        with self._cond:
            return [fields for event, fields in self.events if event == name]

    def wait_for(self, name: str, match: Callable[[dict[str, Any]], bool] = lambda f: True,
                 timeout: float = 15.0) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((f for e, f in self.events if e == name and match(f)), None)

        with self._cond:
            if not self._cond.wait_for(lambda: found() is not None, timeout):
                raise AssertionError(f"no {name!r} event matched; events: {self.events}")
            result = found()
            assert result is not None
            return result


# -- the node in a thread -----------------------------------------------------------


@dataclass
class Node:
    server: NodeServer
    loop: asyncio.AbstractEventLoop
    pki: Pki
    observer: RecordingObserver
    timers: ManualTimers
    thread: threading.Thread
    tmp: Path
    _names: Iterator[int] = field(default_factory=lambda: iter(range(1_000_000)))

    @property
    def port(self) -> int:
        return self.server.port

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the node's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], Any]) -> Any:
        async def wrapper() -> Any:
            return fn()

        return self.run(wrapper())

    def advance(self, seconds: float) -> int:
        """Move the injected clock and fire the timers now due (on the node's loop)."""
        return self.call(lambda: self.timers.advance(seconds))

    def creds(self, **kwargs: Any) -> Credentials:
        return write_user_cert(self.pki, f"user{next(self._names)}", **kwargs)

    def client(self, creds: Credentials | None = None, login: str = "root") -> SshClient:
        return SshClient(self, creds or self.creds(), login)


PolicyFactory = Callable[[Clock], NodePolicy]


def start_node(tmp: Path, policy: PolicyFactory | None = None, **settings: Any) -> Node:
    pki = make_pki(tmp / "pki")
    observer = RecordingObserver()
    timers = ManualTimers(FakeClock())
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="node-loop", daemon=True)
    thread.start()
    node_settings = NodeSettings(
        host="127.0.0.1", port=0, host_key=pki.host_key, host_certs=[pki.host_cert],
        user_ca_keys=[pki.user_ca.convert_to_public()], server_id="node-1",
        server_name="test-node", **settings,
    )

    async def make() -> NodeServer:
        chosen = policy(timers.clock) if policy else CertPolicy(clock=timers.clock)
        server = NodeServer(node_settings, chosen, observer, timers=timers)
        await server.start()
        return server

    server = asyncio.run_coroutine_threadsafe(make(), loop).result(30)
    return Node(server, loop, pki, observer, timers, thread, tmp)


async def _drain_loop() -> None:
    """Finish what is left on the loop before it closes: transports that are closing
    close their sockets on the next turns of the loop."""
    current = asyncio.current_task()
    pending = [task for task in asyncio.all_tasks() if task is not current]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for _ in range(5):
        await asyncio.sleep(0)


def stop_node(node: Node) -> None:
    try:
        node.run(node.server.stop())
        node.run(_drain_loop())
    finally:
        node.loop.call_soon_threadsafe(node.loop.stop)
        node.thread.join(10)
        node.loop.close()
    assert not node.observer.invalid, node.observer.invalid


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    started = start_node(tmp_path)
    try:
        yield started
    finally:
        stop_node(started)


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """Start nodes with a custom policy or settings; all are stopped at the end."""
    nodes: list[Node] = []

    def make(policy: PolicyFactory | None = None, **settings: Any) -> Node:
        started = start_node(tmp_path / f"node{len(nodes)}", policy, **settings)
        nodes.append(started)
        return started

    yield make
    for started in nodes:
        stop_node(started)


# -- stock OpenSSH clients --------------------------------------------------------------


class SshClient:
    def __init__(self, node: Node, creds: Credentials, login: str) -> None:
        self.node = node
        self.creds = creds
        self.login = login

    def options(self, *extra: str) -> list[str]:
        """Client options; ``extra`` come first because ssh keeps the first value it sees."""
        opts = [*extra,
            "-F", "/dev/null",
            "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none",
            "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={self.node.pki.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=10",
            "-i", str(self.creds.key),
        ]
        if self.creds.cert is not None:
            opts += ["-o", f"CertificateFile={self.creds.cert}"]
        return opts

    def ssh_argv(self, *args: str, options: tuple[str, ...] = ()) -> list[str]:
        return ["ssh", *self.options(*options), "-p", str(self.node.port),
                f"{self.login}@127.0.0.1", *args]

    def ssh(self, command: str, *, options: tuple[str, ...] = (), input: bytes | None = None,
            stdin: Any = None, stdout: Any = subprocess.PIPE, timeout: float = 60
            ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self.ssh_argv("--", command, options=options), input=input,
            stdin=stdin if input is None else None, stdout=stdout,
            stderr=subprocess.PIPE, timeout=timeout, check=False,
        )

    def scp(self, *args: str, legacy: bool = False, timeout: float = 60
            ) -> subprocess.CompletedProcess[bytes]:
        argv = ["scp", *self.options(), "-P", str(self.node.port), *(["-O"] if legacy else []),
                *args]
        return subprocess.run(argv, capture_output=True, timeout=timeout, check=False)

    def remote(self, path: str) -> str:
        return f"{self.login}@127.0.0.1:{path}"

    def sftp(self, batch: str, timeout: float = 60, options: tuple[str, ...] = ()
             ) -> subprocess.CompletedProcess[bytes]:
        argv = ["sftp", *self.options(), *options, "-P", str(self.node.port), "-b", "-",
                f"{self.login}@127.0.0.1"]
        return subprocess.run(argv, input=batch.encode(), capture_output=True,
                              timeout=timeout, check=False)


# -- a local account to log in as ---------------------------------------------------------


TEST_GROUP = "limen-test-extra"


def _ensure_account() -> None:
    try:
        grp.getgrnam(TEST_GROUP)
    except KeyError:
        subprocess.run(["groupadd", TEST_GROUP], check=True, capture_output=True)
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", TEST_USER],
                       check=True, capture_output=True)
    if TEST_USER not in grp.getgrnam(TEST_GROUP).gr_mem:
        subprocess.run(["usermod", "-a", "-G", TEST_GROUP, TEST_USER],
                       check=True, capture_output=True)
    home = pwd.getpwnam(TEST_USER).pw_dir
    os.makedirs(home, exist_ok=True)


@pytest.fixture(scope="session")
def test_user() -> pwd.struct_passwd:
    """The non-root account ``limen-test`` with one supplementary group (the suite runs as
    root, in CI too; the account is created when missing)."""
    if os.geteuid() != 0:
        pytest.fail("the node tests run as root: they start sessions as other users")
    _ensure_account()
    entry = pwd.getpwnam(TEST_USER)
    os.chown(entry.pw_dir, entry.pw_uid, entry.pw_gid)
    return entry

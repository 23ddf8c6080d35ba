"""Test kit for the jump host: CAs and certificates made with asyncssh, a stock sshd node,
stock ssh invocations, and a router that counts dials.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from limen.proxy.ssh_jump import NodeRoute, StaticRouter
from tests.support.event_shapes import proxy_problem
from tests.support.ports import free_port
from tests.support.processes import stop_process

CLUSTER = "test.limen"
SSHD = "/usr/sbin/sshd"
SSH = "/usr/bin/ssh"
DAY = 24 * 3600



def new_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


def write_private(path: Path, key: asyncssh.SSHKey) -> Path:
    path.write_bytes(key.export_private_key("openssh"))
    path.chmod(0o600)
    return path


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


@dataclass
class Pki:
    """A cluster's user and host CAs, plus a stranger's CA."""

    root: Path
    user_ca: asyncssh.SSHKey = field(default_factory=lambda: new_key())
    host_ca: asyncssh.SSHKey = field(default_factory=lambda: new_key())
    other_ca: asyncssh.SSHKey = field(default_factory=lambda: new_key())

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.user_ca_pub = self.root / "user_ca.pub"
        self.user_ca_pub.write_bytes(self.user_ca.export_public_key("openssh"))
        self.known_hosts = self.root / "known_hosts"
        host_ca_line = self.host_ca.export_public_key("openssh").decode().strip()
        self.known_hosts.write_text(f"@cert-authority * {host_ca_line}\n")

    def host_identity(
        self, name: str, principals: list[str], ca: asyncssh.SSHKey | None = None
    ) -> tuple[asyncssh.SSHKey, asyncssh.SSHCertificate]:
        key = new_key()
        cert = (ca or self.host_ca).generate_host_certificate(
            key, name, principals=principals, valid_after=time.time() - 60,
            valid_before=time.time() + DAY,
        )
        return key, cert

    def user(
        self,
        name: str,
        key_id: str = "alice",
        principals: tuple[str, ...] = ("alice", "root"),
        ca: asyncssh.SSHKey | None = None,
        valid_after: float | None = None,
        valid_before: float | None = None,
        port_forwarding: bool = False,
    ) -> UserFiles:
        """A key and certificate on disk (no -cert.pub beside the key: ssh must not guess)."""
        key = new_key()
        now = time.time()
        cert = (ca or self.user_ca).generate_user_certificate(
            key, key_id, principals=list(principals),
            valid_after=now - 60 if valid_after is None else valid_after,
            valid_before=now + 3600 if valid_before is None else valid_before,
            permit_port_forwarding=port_forwarding, permit_agent_forwarding=False,
            permit_x11_forwarding=False, permit_pty=True, permit_user_rc=False,
        )
        folder = self.root / name
        folder.mkdir(exist_ok=True)
        key_path = write_private(folder / "key", key)
        cert_path = folder / "cert"
        cert_path.write_bytes(cert.export_certificate("openssh"))
        config = folder / "ssh_config"
        config.write_text(
            "Host *\n"
            "  IdentitiesOnly yes\n"
            "  IdentityAgent none\n"
            f"  IdentityFile {key_path}\n"
            f"  CertificateFile {cert_path}\n"
            f"  UserKnownHostsFile {self.known_hosts}\n"
            "  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n"
            "  ConnectTimeout 10\n"
            "  LogLevel INFO\n"
        )
        return UserFiles(key, cert, key_path, cert_path, config)


@dataclass
class UserFiles:
    key: asyncssh.SSHKey
    cert: asyncssh.SSHCertificate
    key_path: Path
    cert_path: Path
    config: Path


class Sshd:
    """A stock OpenSSH sshd on 127.0.0.1 trusting the test's user CA."""

    def __init__(self, pki: Pki, root: Path, name: str = "node1", extra: str = "") -> None:
        self.pki = pki
        self.root = root
        self.name = name
        self.port = free_port()
        self.log: list[str] = []
        root.mkdir(parents=True, exist_ok=True)
        key, cert = pki.host_identity(name, [name, f"{name}.{CLUSTER}", "127.0.0.1", "localhost"])
        host_key = write_private(root / "host_key", key)
        (root / "host_key-cert.pub").write_bytes(cert.export_certificate("openssh"))
        self.config = root / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {host_key}\n"
            f"HostCertificate {root / 'host_key-cert.pub'}\n"
            f"TrustedUserCAKeys {pki.user_ca_pub}\n"
            "AuthorizedKeysFile none\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "PidFile none\n"
            "MaxStartups 200\n"
            "MaxSessions 50\n"
            "LogLevel VERBOSE\n"
            "UseDNS no\n" + extra
        )
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Sshd:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its per-connection children share the group
        )
        self._collector = threading.Thread(target=self._collect, daemon=True)
        self._collector.start()
        wait_until(self._listening, 10, f"sshd on port {self.port}")
        return self

    def _collect(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError("sshd exited:\n" + "\n".join(self.log))
        return any("Server listening" in line for line in self.log)

    def connections_seen(self) -> int:
        return sum("Connection from" in line for line in self.log)

    def stop(self) -> None:
        if self.proc is None:
            return
        # The listener and any session children it forked: the group we created.
        stop_process(self.proc, group=True)
        self._collector.join(10)  # stderr ends once every process of the group is gone
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def route(self) -> NodeRoute:
        return NodeRoute(node_id=f"id-{self.name}", name=self.name, host="127.0.0.1",
                         port=self.port)


class CountingRouter(StaticRouter):
    """StaticRouter that remembers how often it dialed."""

    def __init__(self, routes: list[NodeRoute]) -> None:
        super().__init__(routes=routes)
        self.dials = 0

    async def open_stream(self, route: NodeRoute):  # type: ignore[override]
        self.dials += 1
        return await super().open_stream(route)


class Recorder:
    """A JumpHost observer that keeps every event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []
        self.invalid: list[str] = []  # events the auth service would refuse, and why
        self._changed = asyncio.Event()

    async def on_event(self, name: str, fields: dict) -> None:
        problem = proxy_problem(name, fields)
        if problem is not None:
            self.invalid.append(problem)
        self.events.append((name, fields))
        self._changed.set()

    def named(self, name: str) -> list[dict]:
        return [fields for event, fields in self.events if event == name]

    async def wait_for(self, name: str, timeout: float = 10.0, **match: object) -> dict:
        """The first event called ``name`` whose fields include ``match``."""

        async def first() -> dict:
            while True:
                for fields in self.named(name):
                    if all(fields.get(k) == v for k, v in match.items()):
                        return fields
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(first(), timeout)


@dataclass
class SshResult:
    code: int
    out: bytes
    err: str


async def run_ssh(
    user: UserFiles, jump_port: int, target: str, command: str,
    stdin: bytes | None = None, jump_user: str = "alice", extra: list[str] | None = None,
    timeout: float = 60,
) -> SshResult:
    """Stock ssh through the jump host: ssh -F CFG -J jump_user@127.0.0.1:PORT target cmd."""
    argv = [SSH, "-F", str(user.config), "-J", f"{jump_user}@127.0.0.1:{jump_port}",
            *(extra or []), target, command]
    return await run(argv, stdin, timeout)


async def run(argv: list[str], stdin: bytes | None = None, timeout: float = 60) -> SshResult:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "LC_ALL": "C"},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return SshResult(proc.returncode or 0, out, err.decode(errors="replace"))

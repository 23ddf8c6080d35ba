"""One session to an OpenSSH node, relayed by the proxy: checked, recorded, audited.

Before anything reaches the sshd: the user's certificate is still valid, and the auth
service issues a certificate for this user, login and node only if the current roles
allow the login there and no lock says otherwise (a refusal is ``session.rejected`` and
a sentence on the user's stderr). Then the sshd must prove it is the node
(``upstream``), the recording is opened (asciicast v2 in the proxy's data dir,
uploaded to the same store as nodes' recordings), and the bytes are copied with flow
control both ways. Output of a shell or command is recorded; an SFTP or legacy scp
session's bytes are counted and each file is an ``sftp`` or ``scp`` event, followed
from the protocol as on nodes. ``session.start``, ``exec``, ``session.data`` and
``session.end`` name the node by its registration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath
import time
import uuid
from typing import TYPE_CHECKING, Any

import asyncssh
from asyncssh.stream import SSHReader, SSHWriter

from limen.errors import AccessDenied, BadParameter, LimenError
from limen.proxy.openssh.upstream import dial_sshd
from limen.proxy.ssh_routes import JumpIdentity, NodeRoute
from limen.recording.cast import CastWriter, LocalRecording
from limen.resources import Node, Session
from limen.sshauth import CertFacts
from limen.transfer.scp import parse_scp_command
from limen.transfer.scp_stream import ScpFollower
from limen.transfer.sftp import SftpFollower

if TYPE_CHECKING:
    from limen.proxy.openssh.front import OpenSSHGateway

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
FILE_COPY_DENIED = "file copy (scp and sftp) is not allowed for you on this node"


class SessionRelay:
    def __init__(self, gateway: OpenSSHGateway, identity: JumpIdentity, route: NodeRoute,
                 node: Node, login: str, cert: CertFacts | None, stdin: SSHReader[bytes],
                 stdout: SSHWriter[bytes], stderr: SSHWriter[bytes]) -> None:
        self.gateway = gateway
        self.identity = identity
        self.route = route
        self.node = node
        self.login = login
        self.cert = cert
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.chan: Any = stdin.channel
        self.sid = str(uuid.uuid4())
        self.command: str | None = self.chan.get_command()
        self.subsystem: str | None = self.chan.get_subsystem()
        self.term_type: str | None = self.chan.get_terminal_type()
        size = self.chan.get_terminal_size()
        self.term_size: tuple[int, int] | None = (size[0], size[1]) if self.term_type else None
        self.kind = "subsystem" if self.subsystem else "exec" if self.command else "shell"
        self.upstream: asyncssh.SSHClientConnection | None = None
        self.cast: CastWriter | None = None
        self.meta: LocalRecording | None = None
        self.follower = _follower(self.subsystem, self.command)
        self.tx = self.rx = 0
        self.reason: str | None = None
        self.started = ""

    # -- the facts every event carries ---------------------------------------------------

    def fields(self, **extra: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "user": self.identity.user, "login": self.login, "sid": self.sid,
            "server_id": self.node.name, "server_hostname": self.node.spec.hostname,
            "server_addr": self.node.spec.addr, "addr.remote": self.identity.remote_addr,
        }
        if self.cert is not None:
            fields.update(cert_serial=self.cert.serial, key_fingerprint=self.cert.fingerprint)
        return {**fields, **extra}

    async def emit(self, name: str, **extra: Any) -> None:
        await self.gateway.link.emit(name, self.fields(**extra))

    # -- the session ----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            upstream, process = await self._open()
        except LimenError as exc:
            await self._refuse(exc.message)
            return
        except Exception:
            log.exception("relaying a session to OpenSSH node %s failed", self.route.name)
            await self._refuse("the proxy could not open the session on the node")
            return
        if self.reason:  # ended (a lock, the user gone) while the proxy was dialing
            upstream.close()
            await self._refuse(self.reason)
            return
        self.upstream = upstream
        status: tuple[int | None, str | None] = (None, None)
        tracker = asyncio.ensure_future(self._keep_listed())
        try:
            await self._start_events()
            status = await self._copy(process)
        finally:
            tracker.cancel()
            upstream.close()
            await self._finish(status)

    async def _keep_listed(self) -> None:
        """Listed in `limen sessions ls` while it runs (the record lapses unless renewed)."""
        session = Session.model_validate({
            "metadata": {"name": self.sid},
            "spec": {"user": self.identity.user, "login": self.login,
                     "node_id": self.node.name, "node_name": self.node.spec.hostname,
                     "interactive": self.term_type is not None,
                     "command": self.command or self.subsystem or "",
                     "started": self.gateway.clock.now(),
                     "remote_addr": self.identity.remote_addr,
                     "parties": [self.identity.user]},
        })
        while True:
            try:
                await self.gateway.link.track(session)
            except LimenError as exc:
                log.warning("listing session %s failed: %s", self.sid, exc.message)
            await asyncio.sleep(self.gateway.link.track_every)

    async def _open(self) -> tuple[asyncssh.SSHClientConnection, asyncssh.SSHClientProcess]:
        gw = self.gateway
        if gw.clock.now() >= self.identity.valid_before:
            raise BadParameter("your certificate expired; run limen login")
        if self.follower is not None and not await gw.link.file_copy_allowed(
                self.identity.user):
            raise AccessDenied(FILE_COPY_DENIED)
        key = asyncssh.generate_private_key("ssh-ed25519")
        cert = await gw.link.session_cert(self.identity.user, self.login, self.node.name,
                                          key.export_public_key("openssh").decode())
        try:
            conn = await dial_sshd(self.route, self.node, gw.guard, gw.host_cas,
                                   gw.link.cluster, gw.clock, self.login, key, cert)
        except LimenError as exc:
            gw.spawn(gw.link.set_state(self.node.name, exc.message))
            raise
        gw.spawn(gw.link.set_state(self.node.name, "ok"))
        try:
            process = await conn.create_process(
                command=self.command, subsystem=self.subsystem, term_type=self.term_type,
                term_size=self.term_size, env=self.chan.get_environment(), encoding=None,
                request_pty="force" if self.term_type else False,
            )
        except (asyncssh.Error, OSError) as exc:
            conn.close()
            raise BadParameter(f"the node refused the session: {exc}") from None
        self._open_recording()
        return conn, process

    def _open_recording(self) -> None:
        start_ns = time.time_ns()
        cols, rows = self.term_size or (80, 24)
        directory = self.gateway.recordings
        self.meta = LocalRecording(
            session_id=self.sid, user=self.identity.user, login=self.login,
            node=self.node.spec.hostname, node_id=self.node.name,
            kind=self.kind, command=self.command or self.subsystem or "", start_ns=start_ns)
        self.meta.save(directory / f"{self.sid}.json")
        self.cast = CastWriter(directory / f"{self.sid}.cast", cols, rows, start_ns,
                               title=f"{self.login}@{self.node.spec.hostname}",
                               command=self.command or "", term=self.term_type or "")

    async def _start_events(self) -> None:
        await self.gateway.link.bind(self.sid, self.node, self.identity.user, self.login)
        self.started = self.gateway.clock.now().isoformat()
        await self.emit(
            "session.start", session_kind=self.kind, interactive=self.term_type is not None,
            terminal_size=f"{self.term_size[0]}:{self.term_size[1]}" if self.term_size else None,
            command=self.command, subsystem=self.subsystem, session_start=self.started)

    async def _refuse(self, reason: str) -> None:
        await self.emit("session.rejected", reason=reason, session_kind=self.kind,
                        command=self.command, subsystem=self.subsystem)
        with contextlib.suppress(Exception):
            self.stderr.write(f"limen: {reason}\r\n".encode())
            self.chan.exit(1)

    # -- copying ----------------------------------------------------------------------------

    async def _copy(self, process: asyncssh.SSHClientProcess) -> tuple[int | None, str | None]:
        down = [asyncio.ensure_future(self._down(process.stdout, self.stdout, process)),
                asyncio.ensure_future(self._down(process.stderr, self.stderr, None))]
        up = asyncio.ensure_future(self._up(process))
        try:
            await asyncio.gather(*down)
            await process.wait_closed()
        finally:
            up.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await up
        return process.exit_status, process.exit_signal[0] if process.exit_signal else None

    async def _down(self, reader: Any, writer: SSHWriter[bytes],
                    process: asyncssh.SSHClientProcess | None) -> None:
        """The node's output to the user (``process``: stdout, which a transfer follows)."""
        while data := await reader.read(CHUNK):
            self.tx += len(data)
            self._record(data)
            if self.follower is not None and process is not None:
                self._follow(self.follower.to_user, data)
                held = self.follower.take_input()  # scp: user bytes its answer released
                if held:
                    process.stdin.write(held)
            writer.write(data)
            await writer.drain()

    async def _up(self, process: asyncssh.SSHClientProcess) -> None:
        while True:
            try:
                data = await self.stdin.read(CHUNK)
            except asyncssh.TerminalSizeChanged as change:
                process.change_terminal_size(change.width, change.height)
                if self.cast is not None:
                    self.cast.resize(change.width, change.height)
                continue
            except asyncssh.SignalReceived as sig:
                process.send_signal(sig.signal)
                continue
            except asyncssh.BreakReceived:
                continue
            if not data:
                process.stdin.write_eof()
                return
            self.rx += len(data)
            if self.follower is not None:
                self._follow(self.follower.from_user, data)
                data = self.follower.take_input()
            process.stdin.write(data)
            await process.stdin.drain()

    def _record(self, data: bytes) -> None:
        if self.cast is None:
            return
        if self.follower is not None:
            self.cast.binary(data)
        else:
            self.cast.output(data)
        self.gateway.uploader.wake()

    def _follow(self, step: Any, data: bytes) -> None:
        assert self.follower is not None
        try:
            step(data)
        except BadParameter as exc:
            self._transfer_events([{"action": "protocol_error", "error": exc.message}])
            self.end(f"the {self.follower.event} stream broke the protocol")
            return
        self._transfer_events(self.follower.take_events())

    def _transfer_events(self, events: list[dict[str, Any]]) -> None:
        assert self.follower is not None
        for event in events:
            self.gateway.spawn(self.emit(self.follower.event, **event))

    def end(self, reason: str, message: str = "") -> None:
        """End the session from outside (the user's connection closed, a lock), telling
        the person at the other end why when there is something to say."""
        self.reason = self.reason or reason
        if message:
            with contextlib.suppress(Exception):
                self.stderr.write(f"\r\n{message}\r\n".encode())
        if self.upstream is not None:
            self.upstream.close()

    async def _finish(self, status: tuple[int | None, str | None]) -> None:
        code, signal = status
        with contextlib.suppress(LimenError):
            await self.gateway.link.untrack(self.sid)
        if self.follower is not None:
            self._transfer_events(self.follower.finish())
        if self.cast is not None:
            self.cast.close()
        if self.meta is not None:
            self.meta.end_ns = time.time_ns()
            self.meta.save(self.gateway.recordings / f"{self.sid}.json")
            self.gateway.uploader.wake()
        with contextlib.suppress(Exception):
            if signal:
                self.chan.exit_with_signal(signal)
            else:
                self.chan.exit(code if code is not None else 255)
        if self.command:
            await self.emit("exec", command=self.command, exit_code=code, exit_signal=signal)
        await self.emit("session.data", tx=self.tx, rx=self.rx)
        await self.emit(
            "session.end", session_kind=self.kind, interactive=self.term_type is not None,
            command=self.command, subsystem=self.subsystem, session_start=self.started,
            session_stop=self.gateway.clock.now().isoformat(), exit_code=code,
            exit_signal=signal, reason=self.reason, participants=[self.identity.user])


def _follower(subsystem: str | None, command: str | None) -> SftpFollower | ScpFollower | None:
    """What follows this session's file transfers: the sftp subsystem, or a command that
    can be nothing but legacy scp's server (the same rule as on nodes); paths relative to
    the login's home are shown as ``~/...`` (the proxy does not know the home)."""
    if subsystem == "sftp":
        return SftpFollower("~")
    scp = parse_scp_command(command, "~", "scp") if command else None
    if scp is None:
        return None
    return ScpFollower(scp.action, posixpath.join("~", scp.path),
                       scp.target_must_be_directory or scp.recursive)

"""The SSH server the proxy runs, in process, for each jump channel to an OpenSSH node.

The jump host's channel carries the user's SSH connection to "the node"; for an OpenSSH
node that connection ends here, over a socket pair: one end is the jump channel's
stream (``NodePipe`` copies it as for any node), the other an asyncssh server connection
that presents a host certificate for the node's names from the cluster's host CA. It
accepts only the user certificate of the person the jump hop authenticated, and only
session channels (no forwarding to OpenSSH nodes); each session is a ``SessionRelay``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncssh

# asyncssh's stream session, subclassed below: its public process API would hand the
# sftp subsystem to an in-process SFTP server, and here sshd must serve it (pyproject
# pins asyncssh below 2.25; these tests cover the subclass).
from asyncssh.stream import SSHReader, SSHServerStreamSession, SSHWriter

from limen.clock import Clock
from limen.errors import AccessDenied
from limen.proxy.node_verify import AddressGuard
from limen.proxy.openssh.link import FRONT_CERT_TTL, AuthLink
from limen.proxy.openssh.relay import SessionRelay
from limen.proxy.ssh_routes import STREAM_LIMIT, JumpIdentity, NodeRoute
from limen.recording.upload import RecordingUploader
from limen.resources import Node
from limen.sshauth import Accepted, CertAuthServer, CertFacts, TrustedKeys, judge_user

log = logging.getLogger(__name__)

NO_FORWARDING = "port and socket forwarding are not offered for OpenSSH nodes"


class OpenSSHGateway:
    """Everything the relays share: the auth link, the recorder, the front host key."""

    def __init__(self, link: AuthLink, guard: AddressGuard, clock: Clock,
                 recordings: Path, algs: dict[str, Any]) -> None:
        self.link = link
        self.guard = guard
        self.clock = clock
        self.recordings = recordings
        self.algs = algs
        self.user_cas = TrustedKeys([link.user_ca])
        self.host_cas = TrustedKeys([link.host_ca])
        self.key = asyncssh.generate_private_key("ssh-ed25519")
        self._certs: dict[str, tuple[asyncssh.SSHCertificate, datetime]] = {}
        self.uploader = RecordingUploader(link, recordings)
        self.fronts: set[FrontServer] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.health: Any = None  # the OpenSSHHealth checking these nodes, once started

    def spawn(self, coro: Any) -> None:
        """Run an audit write in the background, keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start(self) -> None:
        self.recordings.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.uploader.start()

    async def stop(self) -> None:
        for front in list(self.fronts):
            front.close()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.uploader.stop()

    def end_sessions(self, applies: Callable[[JumpIdentity, NodeRoute, str], bool],
                     message: str, reason: str) -> int:
        """End the relayed sessions (identity, node, login) that ``applies`` picks."""
        ended = 0
        for front in list(self.fronts):
            for relay in list(front.relays):
                if applies(front.identity, front.route, relay.login):
                    relay.end(reason, message)
                    ended += 1
        return ended

    def _front_cert(self, node: Node) -> asyncssh.SSHCertificate:
        now = self.clock.now()
        cached = self._certs.get(node.name)
        if cached is None or cached[1] - now < FRONT_CERT_TTL / 2:
            cert = self.link.front_certificate(node, self.key)
            cached = (cert, now + FRONT_CERT_TTL)
            self._certs[node.name] = cached
        return cached[0]

    async def open(self, identity: JumpIdentity,
                   route: NodeRoute) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A stream to an SSH server for the node, ready before the jump channel opens."""
        node = await self.link.node(route.node_id)
        options = asyncssh.SSHServerConnectionOptions(
            server_factory=lambda: FrontServer(self, identity, route, node),
            server_host_keys=[self.key], server_host_certs=[self._front_cert(node)],
            password_auth=False, kbdint_auth=False, gss_host=None, agent_forwarding=False,
            x11_forwarding=False, line_editor=False, login_timeout=30, **self.algs,
        )
        ours, theirs = socket.socketpair()
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(
            lambda: asyncssh.SSHServerConnection(loop, options), sock=ours)
        return await asyncio.open_connection(sock=theirs, limit=STREAM_LIMIT)


class FrontServer(CertAuthServer):
    """One user connection to an OpenSSH node, ended at the proxy."""

    not_a_certificate_hint = "sign in with limen login to get a certificate"

    def __init__(self, gateway: OpenSSHGateway, identity: JumpIdentity, route: NodeRoute,
                 node: Node) -> None:
        super().__init__()
        self.gateway = gateway
        self.identity = identity
        self.route = route
        self.node = node
        self.relays: set[SessionRelay] = set()

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        super().connection_made(conn)
        self.gateway.fronts.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gateway.fronts.discard(self)
        for relay in list(self.relays):
            relay.end("the connection closed")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def judge(self, cert: CertFacts, username: str) -> Accepted:
        if cert.key_id != self.identity.user:
            raise AccessDenied("use the same Limen certificate for the node as for the proxy")
        # The source address is the person's, as the jump hop saw it.
        principal = judge_user(cert, username, self.gateway.user_cas, self.gateway.clock.now(),
                               self.identity.remote_addr or None)
        return Accepted(principal)

    def session_requested(self) -> SSHServerStreamSession[bytes]:
        return _RelaySession(self)

    def connection_requested(self, *args: Any) -> bool:
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, NO_FORWARDING)

    def server_requested(self, *args: Any) -> bool:
        return False

    def unix_connection_requested(self, *args: Any) -> bool:
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, NO_FORWARDING)

    def unix_server_requested(self, *args: Any) -> bool:
        return False


class _RelaySession(SSHServerStreamSession[bytes]):
    """asyncssh's stream session, with every subsystem handed to the relay (sftp too:
    the sshd serves it, the proxy only follows and records it)."""

    def __init__(self, front: FrontServer) -> None:
        super().__init__(self._run)
        self._front = front

    def subsystem_requested(self, subsystem: str) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        return True

    def session_started(self) -> None:
        chan = self._chan
        assert chan is not None and self._conn is not None
        chan.set_encoding(None)
        self._encoding = None
        stdin = SSHReader[bytes](self, chan)
        stdout = SSHWriter[bytes](self, chan)
        stderr = SSHWriter[bytes](self, chan, asyncssh.EXTENDED_DATA_STDERR)
        self._conn.create_task(self._run(stdin, stdout, stderr), stdin.logger)

    async def _run(self, stdin: SSHReader[bytes], stdout: SSHWriter[bytes],
                   stderr: SSHWriter[bytes]) -> None:
        front = self._front
        assert front.conn is not None
        relay = SessionRelay(front.gateway, front.identity, front.route, front.node,
                             front.username, front.cert, stdin, stdout, stderr)
        front.relays.add(relay)
        try:
            await relay.run()
        finally:
            front.relays.discard(relay)

"""The node's SSH service: listener, live connections and sessions, and hand-over points.

Besides its own TCP listener, the node can serve SSH over a connection someone else
accepted (``serve_socket``), over any byte stream (``serve_stream``, e.g. a proxy's
in-process pipe), or inside an SSH tunnel (``listen_on``: a reverse tunnel's
``tcpip-forward``). All of them use ``listen_options()``, which is also what to pass to
``asyncssh.listen``/``run_server``/``SSHClientConnection.listen_ssh`` directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import asyncssh

from limen.node.ssh.connection import NodeConnection
from limen.node.ssh.identity import UserIdentity
from limen.node.ssh.policy import CertPolicy, NodeObserver, NodePolicy, NullObserver
from limen.node.ssh.session import SessionContext
from limen.node.ssh.settings import NodeSettings
from limen.node.ssh.tunnel_channels import WideChannels
from limen.sshalgs import hardened_options
from limen.sshauth import TrustedKeys
from limen.timers import LoopTimers, Timers

log = logging.getLogger(__name__)

SHUTDOWN_MESSAGE = "limen: the node is shutting down"
STREAM_CHUNK = 64 * 1024


def server_algs() -> dict[str, Any]:
    """hardened_options() as an asyncssh server takes them.

    The shared list names certificate types among the signature algorithms (OpenSSH's
    PubkeyAcceptedAlgorithms); asyncssh refuses those names there and accepts
    certificates of the listed plain types anyway.
    """
    options = hardened_options()
    options["signature_algs"] = [a for a in options["signature_algs"] if "-cert-v01@" not in a]
    return options


class NodeServer:
    def __init__(
        self,
        settings: NodeSettings,
        policy: NodePolicy | None = None,
        observer: NodeObserver | None = None,
        *,
        timers: Timers | None = None,
    ) -> None:
        self.settings = settings
        self.timers = timers or LoopTimers()
        self.clock = self.timers.clock
        self.policy: NodePolicy = policy or CertPolicy(clock=self.clock)
        self.observer: NodeObserver = observer or NullObserver()
        self.trusted_cas = TrustedKeys(settings.user_ca_keys)
        self.sessions: dict[str, SessionContext] = {}  # live sessions by id
        self.connections: set[NodeConnection] = set()
        self._acceptor: asyncssh.SSHAcceptor | None = None
        # Listeners inside reverse tunnels (listen_on), to hand them renewed certificates.
        self._tunnel_acceptors: list[tuple[asyncssh.SSHClientConnection,
                                           asyncssh.SSHAcceptor]] = []
        self._tasks: set[asyncio.Future[Any]] = set()
        self.port = settings.port

    # -- what other modules reuse ------------------------------------------------------

    def listen_options(self) -> dict[str, Any]:
        """Keyword arguments for asyncssh.listen / run_server / listen_ssh."""
        return {
            **server_algs(),
            "server_factory": lambda: NodeConnection(self),
            "server_host_keys": [self.settings.host_key],
            "server_host_certs": list(self.settings.host_certs),
            "server_version": self.settings.server_version,
            "login_timeout": self.settings.login_grace_time,
            "encoding": None,  # bytes end to end
            "line_editor": False,  # the pty and the user's programs edit lines, not asyncssh
            "allow_pty": True,
            "agent_forwarding": True,  # then decided per connection by the policy
            "x11_forwarding": False,
            "password_auth": False,
            "kbdint_auth": False,
            "host_based_auth": False,
            "gss_host": None,
            **self.settings.extra_listen_options,
        }

    async def start(self) -> None:
        self._acceptor = await asyncssh.listen(
            self.settings.host, self.settings.port, reuse_address=True, **self.listen_options()
        )
        self.port = self._acceptor.get_port()
        log.info("node SSH service listening on %s:%d", self.settings.host, self.port)

    async def serve_socket(self, sock: socket.socket) -> asyncssh.SSHServerConnection:
        """Run the node's SSH server on a connected socket someone else accepted."""
        return await asyncssh.run_server(sock, **self.listen_options())

    async def listen_on(self, tunnel: asyncssh.SSHClientConnection, host: str,
                        port: int) -> asyncssh.SSHAcceptor:
        """Serve inside an SSH connection: each channel the peer opens to host:port
        (a reverse tunnel's tcpip-forward) becomes a node connection."""
        acceptor = await asyncssh.listen(host, port, tunnel=WideChannels(tunnel),
                                         **self.listen_options())
        self._tunnel_acceptors = [(t, a) for t, a in self._tunnel_acceptors if not t.is_closed()]
        self._tunnel_acceptors.append((tunnel, acceptor))
        return acceptor

    def update_host_certs(self, certs: list[asyncssh.SSHCertificate]) -> None:
        """Serve renewed host certificates to every connection from now on.

        asyncssh applies an acceptor's updated options to connections it accepts later;
        live connections (and their sessions) keep going untouched."""
        self.settings.host_certs = list(certs)
        live = [a for t, a in self._tunnel_acceptors if not t.is_closed()]
        for acceptor in [self._acceptor, *live]:
            if acceptor is not None:
                acceptor.update(server_host_certs=list(certs))

    async def serve_stream(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        """Serve one SSH connection carried by any byte stream; returns when it ends.

        asyncssh needs a socket, so a socketpair bridges the stream with two copy loops.
        """
        ours, theirs = socket.socketpair()
        bridge_reader, bridge_writer = await asyncio.open_connection(sock=ours)
        copies = [
            asyncio.ensure_future(_copy(reader, bridge_writer)),
            asyncio.ensure_future(_copy(bridge_reader, writer)),
        ]
        try:  # run_server returns only after authentication: the copies must already run
            conn = await asyncssh.run_server(theirs, **self.listen_options())
            await conn.wait_closed()
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            log.info("SSH over a stream ended before login: %s", exc)
        finally:
            theirs.close()
            await asyncio.wait(copies, timeout=5)  # let the last bytes through
            for task in copies:
                task.cancel()
            bridge_writer.close()
            writer.close()

    # -- stopping ------------------------------------------------------------------------

    async def stop(self, message: str = SHUTDOWN_MESSAGE) -> None:
        """Stop accepting, end live sessions with ``message``, close every connection."""
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
            self._acceptor = None
        await self.terminate_all(message, "node shutdown")
        conns = [c.conn for c in list(self.connections) if c.conn is not None]
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 5)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    async def terminate_all(self, message: str, reason: str = "terminated") -> None:
        live = list(self.sessions.values())
        await asyncio.gather(*(ctx.terminate(message, reason) for ctx in live))

    async def end_connections(self, applies: Callable[[UserIdentity, str], bool],
                              message: str, reason: str) -> int:
        """End every connection whose user (identity, login) ``applies``: its sessions
        are told ``message``, its forwards and the connection itself close."""
        targeted = [conn for conn in list(self.connections)
                    if conn.identity is not None and applies(conn.identity, conn.login)]
        await asyncio.gather(*(conn.end(message, reason) for conn in targeted))
        return len(targeted)

    async def terminate(self, session_id: str, message: str, reason: str = "terminated") -> bool:
        ctx = self.sessions.get(session_id)
        if ctx is None:
            return False
        await ctx.terminate(message, reason)
        return True

    # -- bookkeeping used by connections and sessions -------------------------------------

    def connection_opened(self, conn: NodeConnection) -> None:
        self.connections.add(conn)

    def connection_closed(self, conn: NodeConnection) -> None:
        self.connections.discard(conn)

    def session_started(self, ctx: SessionContext) -> None:
        self.sessions[ctx.id] = ctx

    def session_ended(self, ctx: SessionContext) -> None:
        self.sessions.pop(ctx.id, None)

    async def emit(self, name: str, fields: dict[str, Any]) -> None:
        """Send an audit event; an observer failure is logged, never a session's problem."""
        try:
            await self.observer.on_event(name, fields)
        except Exception:
            log.exception("observer failed on %s event", name)

    async def open_recording(self, session_id: str, fields: dict[str, Any]) -> str | None:
        """Start a session's recording; None, or why it cannot be recorded."""
        try:
            return await self.observer.open_recording(session_id, fields)
        except Exception:
            log.exception("observer failed to open the recording of session %s", session_id)
            return "the recorder failed"

    async def record_output(self, session_id: str, data: bytes, stream: str) -> None:
        try:
            await self.observer.on_session_output(session_id, data, stream)
        except Exception:
            log.exception("observer failed to take output of session %s", session_id)

    def session_state(self, session_id: str, state: str) -> None:
        """Tell the observer (session trackers) a session's new state, in the background."""
        self.spawn(self._session_state(session_id, state))

    async def _session_state(self, session_id: str, state: str) -> None:
        try:
            await self.observer.on_session_state(session_id, state)
        except Exception:
            log.exception("observer failed on the state of session %s", session_id)

    def emit_soon(self, name: str, fields: dict[str, Any]) -> None:
        """emit() from a synchronous callback."""
        self.spawn(self.emit(name, fields))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("node background task failed", exc_info=task.exception())


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(STREAM_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()

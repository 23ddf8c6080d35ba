"""One SSH connection to the node: authentication, then session and forward channels.

Authentication accepts only user certificates from the cluster's user CA that name the
requested login; ``CertAuthServer`` (limen.sshauth) is the one hook every Limen SSH
server uses, and ``judge`` below is the node's decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from base64 import b64encode
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import asyncssh

from limen.diag import metrics
from limen.errors import AccessDenied
from limen.node.forwarding.destinations import Destination
from limen.node.forwarding.local import ForwardedConnection, connect_target, resolve_target
from limen.node.forwarding.remote import RemoteForwardListener, bind_host, refusal_for_port
from limen.node.process.agent import grant_agent_socket, revoke_agent_socket
from limen.node.process.environment import Endpoints
from limen.node.process.executor import TermSize
from limen.node.process.users import LocalUser
from limen.node.ssh.identity import UserIdentity, identity_from_certificate
from limen.node.ssh.policy import SessionPermit, destination_allowed
from limen.node.ssh.session import SessionContext
from limen.sshauth import Accepted, CertAuthServer, CertFacts, judge_user
from limen.timers import TimerHandle

if TYPE_CHECKING:
    from limen.node.ssh.channel import SessionChannel
    from limen.node.ssh.server import NodeServer

log = logging.getLogger(__name__)

PROHIBITED = asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
FAILED = asyncssh.OPEN_CONNECT_FAILED
# How long a connection that ends waits for the client to close its session channels.
CLOSE_GRACE = 2.0


def _fmt(addr: tuple[str, int] | None) -> str | None:
    return f"{addr[0]}:{addr[1]}" if addr else None


class NodeConnection(CertAuthServer):
    not_a_certificate_hint = (
        "only certificates from the cluster's user CA are accepted; "
        "log in to get one"
    )

    def __init__(self, node: NodeServer) -> None:
        super().__init__()
        self.node = node
        self.settings = node.settings
        self.login = ""
        self.identity: UserIdentity | None = None
        self.local_addr: tuple[str, int] | None = None
        self.channels: set[SessionChannel] = set()
        self._no_channels = asyncio.Event()  # set while no session channel is open
        self._no_channels.set()
        self._auth_began = False
        self._key_offered = False
        self._agent_allowed: bool | None = None
        self._expiry_timer: TimerHandle | None = None
        # For the set-up latency metric: from the TCP connection to its first session.
        self._connected_at = time.monotonic()
        self._first_session_seen = False

    # -- connection ------------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        super().connection_made(conn)
        sock = conn.get_extra_info("sockname")
        if isinstance(sock, tuple) and len(sock) >= 2:
            self.local_addr = str(sock[0]), int(sock[1])
        self.node.connection_opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.node.connection_closed(self)
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
        reason = str(exc) if exc else "client closed the connection"
        if self.identity is not None:
            self.node.emit_soon("client.disconnect", self.base_fields(reason=reason))
        elif self._auth_began and not self._key_offered:
            self.node.emit_soon("auth", self.base_fields(
                success=False,
                reason="no certificate was offered; only certificates from the cluster's "
                       "user CA are accepted (passwords and plain keys are not)",
            ))

    @property
    def endpoints(self) -> Endpoints:
        remote = self.remote_addr or ("0.0.0.0", 0)
        local = self.local_addr or ("0.0.0.0", self.node.port)
        return Endpoints(remote[0], remote[1], local[0], local[1])

    def base_fields(self, **extra: Any) -> dict[str, Any]:
        """The common audit fields of everything that happens on this connection."""
        return {
            "user": self.identity.user if self.identity else None,
            "login": self.login or None,
            "server_id": self.settings.server_id,
            "server_hostname": self.settings.server_name,
            "addr.remote": _fmt(self.remote_addr),
            "addr.local": _fmt(self.local_addr),
            # The user's certificate as received: the auth service believes a user name
            # only when the certificate (signed by the user CA) backs it.
            "cert": b64encode(self.identity.cert).decode() if self.identity else None,
            **extra,
        }

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    # -- authentication ------------------------------------------------------------

    def begin_auth(self, username: str) -> bool:
        self.login = username
        self._auth_began = True
        return True  # authentication is always required

    def judge(self, cert: CertFacts, username: str) -> Accepted:
        self._key_offered = True
        peer = self.remote_addr[0] if self.remote_addr else None
        judge_user(cert, username, self.node.trusted_cas, self.node.clock.now(), peer)
        return Accepted(username)

    async def on_refused(self, reason: str, cert: CertFacts | None, username: str) -> None:
        self._key_offered = True
        await self.node.emit("auth", self.base_fields(
            success=False, reason=reason, user=cert.key_id if cert else None,
            method="publickey",
        ))

    async def auth_completed(self) -> None:
        assert self.cert is not None
        self.identity = identity_from_certificate(self.cert, self.remote_addr)
        await self.node.emit("auth", self.base_fields(success=True, method="certificate"))

    # -- authorization -------------------------------------------------------------

    async def authorize(self, action: str, detail: dict[str, Any]) -> SessionPermit:
        if self.identity is None:
            raise AccessDenied("not authenticated")
        permit = await self.node.policy.authorize(self.identity, self.login, action, detail)
        self._arm_expiry(permit)
        return permit

    def _arm_expiry(self, permit: SessionPermit) -> None:
        """At the permit's disconnect time, end the whole connection (forwards too)."""
        if permit.disconnect_at is None or self._expiry_timer is not None:
            return
        self._expiry_timer = self.node.timers.call_at(permit.disconnect_at, self._on_expired)

    def _on_expired(self) -> None:
        self.node.spawn(self._end_expired())

    async def _end_expired(self) -> None:
        assert self.identity is not None
        contexts = [chan.ctx for chan in list(self.channels) if chan.ctx is not None]
        await asyncio.gather(*(ctx.expire() for ctx in contexts))
        await self._channels_closed()
        self.close()

    async def end(self, message: str, reason: str) -> None:
        """End everything on this connection: sessions (told ``message``), forwards, the
        connection itself."""
        contexts = [chan.ctx for chan in list(self.channels) if chan.ctx is not None]
        await asyncio.gather(*(ctx.terminate(message, reason) for ctx in contexts))
        await self._channels_closed()
        if self.conn is not None:  # OpenSSH prints the reason: "Received disconnect ..."
            self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, message)

    # -- session channels --------------------------------------------------------------

    def session_requested(self) -> Coroutine[Any, Any, SessionChannel]:
        return self._open_session()  # asyncssh awaits it: a refusal is a ChannelOpenError

    async def _open_session(self) -> SessionChannel:
        from limen.node.ssh.channel import SessionChannel  # channel imports this module

        try:
            permit = await self.authorize("session", {"open_sessions": len(self.channels)})
            if permit.max_sessions and len(self.channels) >= permit.max_sessions:
                raise AccessDenied(
                    f"you may have at most {permit.max_sessions} sessions per connection"
                )
        except AccessDenied as exc:
            await self.node.emit("session.rejected", self.base_fields(reason=exc.message))
            raise asyncssh.ChannelOpenError(PROHIBITED, exc.message) from None
        except Exception:  # escaping into asyncssh would close the whole connection
            log.exception("authorizing a session failed")
            raise asyncssh.ChannelOpenError(FAILED, "internal error") from None
        channel = SessionChannel(self)
        self.channels.add(channel)
        self._no_channels.clear()
        return channel

    def channel_closed(self, channel: SessionChannel) -> None:
        self.channels.discard(channel)
        if not self.channels:
            self._no_channels.set()

    async def _channels_closed(self) -> None:
        """Until the client has closed its end of every session channel (CLOSE_GRACE at
        most) before the connection goes. OpenSSH writes out what a channel brought
        before it answers the channel's close, but drops what it has not written yet
        when a disconnect comes in the same read: the line telling the user why their
        session ended."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_GRACE):
                await self._no_channels.wait()

    def new_session_context(self, *, kind: str, command: str | None, subsystem: str | None,
                            term_size: TermSize | None) -> SessionContext:
        assert self.identity is not None
        return SessionContext(
            identity=self.identity, login=self.login, server_id=self.settings.server_id,
            server_name=self.settings.server_name, kind=kind, permit=SessionPermit(),
            timers=self.node.timers, emit=self._session_event, base_fields=self.base_fields(),
            command=command, subsystem=subsystem, term_size=term_size,
        )

    async def _session_event(self, name: str, fields: dict[str, Any]) -> None:
        """A session's audit event, counted in the node's session metrics on the way."""
        node = self.settings.server_name
        ids = {"session_id": fields.get("sid")}
        if name == "session.start":
            setup = None if self._first_session_seen else time.monotonic() - self._connected_at
            self._first_session_seen = True
            metrics.session_started(node, setup)
            log.info("session started: %s as %s from %s", fields.get("user"), self.login,
                     fields.get("addr.remote"), extra=ids)
        elif name == "session.end":
            metrics.session_ended(node)
            log.info("session ended: %s as %s", fields.get("user"), self.login, extra=ids)
        await self.node.emit(name, fields)

    async def agent_socket_for(self, user: LocalUser, ctx: SessionContext,
                               path: str) -> str | None:
        """Decide once per connection whether the forwarded agent may be used."""
        if self._agent_allowed is None:
            self._agent_allowed = await self._forward_allowed(
                "agent_forward", {"session_id": ctx.id}, kind="agent",
                check=lambda permit: permit.forward_agent,
            )
            if self._agent_allowed:
                grant_agent_socket(path, user)
            else:
                revoke_agent_socket(path)
        return path if self._agent_allowed else None

    # -- forwarding ----------------------------------------------------------------------

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str,
                             orig_port: int) -> Coroutine[Any, Any, ForwardedConnection]:
        return self._open_forward(dest_host, dest_port, orig_host, orig_port)

    def server_requested(self, listen_host: str, listen_port: int
                         ) -> Coroutine[Any, Any, RemoteForwardListener | bool]:
        """Remote forwarding (ssh -R), when the roles and the certificate allow it."""
        return self._open_remote_forward(listen_host, listen_port)

    async def _open_remote_forward(self, listen_host: str,
                                   listen_port: int) -> RemoteForwardListener | bool:
        requested = f"{listen_host}:{listen_port}"
        error = await self._remote_forward_refusal(listen_host, listen_port)
        listener: RemoteForwardListener | None = None
        if error is None:
            host = bind_host(listen_host)

            async def accepted(reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
                assert listener is not None
                await self._forward_back(listen_host, listener, reader, writer)

            try:
                listener = await RemoteForwardListener.open(host, listen_port, accepted)
            except OSError as exc:
                error = f"the node cannot listen on {host}:{listen_port}: {exc.strerror}"
        await self.node.emit("port", self.base_fields(
            kind="remote-forward", addr=listener.address if listener else requested,
            listen=requested, allowed=error is None, error=error,
        ))
        if error is not None:
            # The SSH reply to a refused forward carries no reason; ssh -v shows this one.
            self._debug(f"remote port forwarding of {requested} refused: {error}")
            return False
        return listener

    async def _remote_forward_refusal(self, listen_host: str, listen_port: int) -> str | None:
        """Why this connection may not listen there now (None: it may)."""
        error = refusal_for_port(self.login, listen_port)
        if error is not None:
            return error
        try:
            await self.authorize("remote_forward", {"listen_host": listen_host,
                                                    "listen_port": listen_port})
        except AccessDenied as exc:
            return exc.message
        except Exception:  # escaping into asyncssh would close the whole connection
            log.exception("authorizing a remote forward failed")
            return "internal error"
        return None

    async def _forward_back(self, listen_host: str, listener: RemoteForwardListener,
                            reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection to a remote forward's port, sent back to the user; roles and
        locks are judged again, since they may have changed since the forward began."""
        peer = writer.get_extra_info("peername") or ("", 0)
        origin = (str(peer[0]), int(peer[1]))
        error = await self._remote_forward_refusal(listen_host, listener.get_port())
        if error is None and self.conn is None:
            error = "the SSH connection is closed"
        if error is None:
            try:
                await self.conn.create_connection(
                    lambda: ForwardedConnection(reader, writer), listen_host,
                    listener.get_port(), *origin,
                )
            except (asyncssh.Error, OSError) as exc:
                error = f"the client refused the forwarded connection: {exc}"
        await self.node.emit("port", self.base_fields(
            kind="remote-forward", addr=listener.address, origin=_fmt(origin),
            allowed=error is None, error=error,
        ))
        if error is not None:
            writer.close()

    def _debug(self, message: str) -> None:
        if self.conn is not None:
            self.conn.send_debug(message, always_display=True)

    def unix_connection_requested(self, dest_path: str) -> bool:
        self._refuse_forward("direct-streamlocal", dest_path,
                             "forwarding to UNIX sockets is not supported on this node")
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        self._refuse_forward("streamlocal-forward", listen_path,
                             "forwarding from UNIX sockets is not supported on this node")
        return False

    def _refuse_forward(self, kind: str, addr: str, error: str) -> None:
        self.node.emit_soon("port", self.base_fields(
            kind=kind, addr=addr, allowed=False, error=error,
        ))

    async def _open_forward(self, host: str, port: int, orig_host: str,
                            orig_port: int) -> ForwardedConnection:
        # Judge the address the node will connect to, not the name asked for.
        try:
            addresses = await resolve_target(host, port)
        except asyncssh.ChannelOpenError as exc:
            await self.node.emit("port", self.base_fields(
                kind="direct-tcpip", addr=f"{host}:{port}", allowed=False, error=exc.reason,
            ))
            raise
        detail = {"host": host, "port": port, "addresses": addresses,
                  "orig_host": orig_host, "orig_port": orig_port}
        chosen: list[str] = []

        def admitted(permit: SessionPermit) -> bool:
            chosen.extend(a for a in addresses
                          if destination_allowed(permit, Destination(host, port, a)))
            return bool(chosen)

        try:
            allowed = await self._forward_allowed("port_forward", detail, kind="direct-tcpip",
                                                  check=admitted)
        except Exception:  # escaping into asyncssh would close the whole connection
            log.exception("authorizing a port forward failed")
            raise asyncssh.ChannelOpenError(FAILED, "internal error") from None
        if not allowed:
            raise asyncssh.ChannelOpenError(
                PROHIBITED, f"port forwarding to {host}:{port} is not allowed"
            )
        reader, writer = await connect_target(chosen[0], port, shown=host)
        return ForwardedConnection(reader, writer)

    async def _forward_allowed(self, action: str, detail: dict[str, Any], *, kind: str,
                               check: Callable[[SessionPermit], bool]) -> bool:
        """Both the policy (no AccessDenied) and the permit it returns must allow it."""
        error = None
        try:
            permit = await self.authorize(action, detail)
            if not check(permit):
                error = f"{action.replace('_', ' ')} is not allowed for you on this node"
        except AccessDenied as exc:
            error = exc.message
        addr = f"{detail['host']}:{detail['port']}" if "host" in detail else None
        resolved = detail.get("addresses")
        await self.node.emit("port", self.base_fields(
            kind=kind, addr=addr, allowed=error is None, error=error,
            **({"resolved": list(resolved)} if resolved else {}),
        ))
        return error is None

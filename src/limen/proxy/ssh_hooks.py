"""Per-connection hooks of the jump host: who authenticated, and where they may go."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import asyncssh

from limen.errors import AccessDenied, LimenError
from limen.proxy.ssh_pipe import NodePipe
from limen.proxy.ssh_routes import JumpIdentity, NodeRoute
from limen.sshauth import Accepted, CertAuthServer, CertFacts, judge_user
from limen.timers import TimerHandle

if TYPE_CHECKING:
    from limen.proxy.ssh_jump import JumpHost

log = logging.getLogger(__name__)

PROXY_SESSION_MESSAGE = "this is the Limen proxy; use it as a jump host (ssh -J)"


class JumpServer(CertAuthServer):
    """Per-connection hooks: who is this, and where may they go."""

    not_a_certificate_hint = (
        "only certificates issued by this cluster are accepted; sign in with limen login "
        "to get one"
    )

    def __init__(self, host: JumpHost) -> None:
        super().__init__()
        self._host = host
        self._identity: JumpIdentity | None = None
        self._pipes: dict[NodePipe, NodeRoute] = {}  # live channels, to which node
        self._expiry: TimerHandle | None = None
        self._lost = False
        self._closed = asyncio.Event()

    # lifecycle

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        super().connection_made(conn)
        self._host.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._host.connections.discard(self)
        if self._expiry is not None:
            self._expiry.cancel()
        for pipe in list(self._pipes):
            pipe.abort()
        if self._identity is None and self.refusals:
            self._host.emit("auth", self._auth_fields(False, "; ".join(self.refusals)))
        self._closed.set()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    @property
    def identity(self) -> JumpIdentity | None:
        return self._identity

    def end(self, message: str) -> None:
        """End the connection and every channel through it, saying why."""
        for pipe in list(self._pipes):
            pipe.abort()
        if self.conn is not None:
            self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, message)

    def end_channels_to(self, applies: Callable[[NodeRoute], bool]) -> int:
        """End the channels to the nodes that ``applies`` picks; the connection stays."""
        ended = [pipe for pipe, route in list(self._pipes.items()) if applies(route)]
        for pipe in ended:
            pipe.abort()
        return len(ended)

    async def wait_closed(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), 10)

    # authentication

    def judge(self, cert: CertFacts, username: str) -> Accepted:
        peer = self.remote_addr[0] if self.remote_addr else None
        principal = judge_user(cert, username, self._host.trusted, self._host.clock.now(),
                               peer, key_id_logs_in=True)
        return Accepted(principal)

    def certificate_permission(self, permission: str) -> bool | None:
        # A direct-tcpip channel here reaches a node's SSH service, picked by name and
        # checked by node policy: node access, not port forwarding. asyncssh would refuse
        # it before any hook runs without permit-port-forwarding. Every other use of that
        # permission is closed by the hooks below (remote forwards, sockets refused).
        return True if permission == "port-forwarding" else None

    async def auth_completed(self) -> None:
        conn = self.conn
        assert conn is not None and self.cert is not None
        self._identity = JumpIdentity.from_cert(
            self.cert, self.username, conn.get_extra_info("peername")
        )
        await self._host.notify("auth", self._auth_fields(True, ""))
        self._expiry = await self._host.watch_expiry(self._identity, self.end)

    def _auth_fields(self, success: bool, reason: str) -> dict[str, Any]:
        conn = self.conn
        ident = self._identity
        fields: dict[str, Any] = {
            "success": success,
            "method": "cert",
            "user": ident.user if ident else "",
            "login": ident.login if ident else (conn.get_extra_info("username") if conn else ""),
            "addr.remote": self.remote_addr[0] if self.remote_addr else "",
        }
        if ident:
            fields.update(
                principals=list(ident.principals),
                valid_before=ident.valid_before.isoformat(),
                cert_serial=ident.serial,
                key_fingerprint=ident.fingerprint,
            )
        if reason:
            fields["reason"] = reason
        return fields

    # what the client asks for

    def session_requested(self) -> bool:
        self._refused("session", PROXY_SESSION_MESSAGE)
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, PROXY_SESSION_MESSAGE
        )

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        self._refused(
            "tcpip-forward",
            f"remote port forwarding ({listen_host}:{listen_port}) is not offered by the proxy",
        )
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        self._refused("streamlocal-forward", "remote socket forwarding is not offered by the proxy")
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        self._refused("direct-streamlocal", "socket forwarding is not offered by the proxy")
        return False

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> tuple[asyncssh.SSHTCPChannel[bytes], Any]:
        assert self.conn is not None
        settings = self._host.settings
        chan = self.conn.create_tcp_channel(window=settings.channel_window,
                                            max_pktsize=settings.channel_max_packet)
        return chan, self._open_node(dest_host, dest_port)

    def _refused(self, kind: str, reason: str) -> None:
        ident = self._identity
        self._host.emit(
            "proxy.refused",
            {"kind": kind, "reason": reason, "user": ident.user if ident else "",
             "addr.remote": ident.remote_addr if ident else ""},
        )

    async def _open_node(self, target: str, port: int) -> NodePipe:
        """Runs before the channel is confirmed: a refusal becomes the open failure."""
        ident = self._identity
        assert ident is not None
        fields: dict[str, Any] = {
            "server_hostname": target, "port": port, "user": ident.user, "login": ident.login,
            "addr.remote": ident.remote_addr,
        }
        try:
            if self._host.clock.now() >= ident.valid_before:
                raise AccessDenied(expired_message(ident))
            route, reader, writer = await self._host.dial(ident, target)
        except LimenError as exc:
            await self._host.notify("proxy.connect", {**fields, "allowed": False,
                                                      "reason": exc.message})
            raise _open_error(exc) from None
        except Exception as exc:  # never let an error escape into asyncssh's task
            log.exception("jump host: dialing node %r failed", target)
            await self._host.notify("proxy.connect", {**fields, "allowed": False,
                                                      "reason": repr(exc)})
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_CONNECT_FAILED, f"the proxy could not reach node '{target}'"
            ) from None
        fields.update(server_hostname=route.name, server_id=route.node_id)
        pipe = NodePipe(reader, writer, on_done=lambda p, e: self._pipe_done(p, e, fields))
        self._pipes[pipe] = route
        if self._lost:  # the client left while we dialed
            pipe.abort()
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "connection closed")
        await self._host.notify("proxy.connect", {**fields, "allowed": True})
        return pipe

    def _pipe_done(self, pipe: NodePipe, exc: Exception | None, fields: dict[str, Any]) -> None:
        self._pipes.pop(pipe, None)
        end = {**fields, "bytes_up": pipe.bytes_up, "bytes_down": pipe.bytes_down}
        if exc is not None:
            end["error"] = str(exc) or type(exc).__name__
        self._host.emit("proxy.disconnect", end)


def expired_message(ident: JumpIdentity) -> str:
    return (f"limen: your certificate expired at {ident.valid_before:%Y-%m-%d %H:%M:%S} UTC; "
            "run limen login to get a new one")


def _open_error(exc: LimenError) -> asyncssh.ChannelOpenError:
    # OpenSSH prints "channel N: open failed: <code text>: <our sentence>".
    if isinstance(exc, AccessDenied):
        return asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, exc.message)
    return asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, exc.message)

"""Direct connections to nodes on the web port (ALPN ``limen-node``): no SSH at the proxy.

`limen config --tls-routing` makes `limen proxy tls --node %r@%h:%p` ssh's ProxyCommand
for every node. It sends one request line inside TLS 1.3 (``limen.tls_direct``): the
node, the login, the user's certificate and a signature by its key over the request and
this TLS connection. Here the certificate is judged as the jump host judges it, the
signature checked, the node found, its policy asked and the node dialed, all through
the jump host (``JumpHost.dial``); then the connection carries the user's own SSH
connection to the node, copied as bytes. Without an SSH layer of its own on the way,
the proxy spends its CPU on the TLS alone, and ssh on one SSH connection instead of two.

What the jump host promises holds here too, through the same hooks: the connection is
in ``JumpHost.connections``, so a lock ends it and a removed node's streams end; the
certificate's expiry ends it when a role says so; each step is the jump host's audit
event (``auth`` with kind ``tls``, ``proxy.connect``, ``proxy.disconnect``). A refusal
is one answer line with the sentence, which `limen proxy tls` prints, then the close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from limen.errors import BadParameter, LimenError
from limen.proxy.ssh_routes import JumpIdentity, NodeRoute
from limen.sshauth import CertFacts, judge_user, read_certificate
from limen.sshauth.proof import check_sshsig
from limen.timers import TimerHandle
from limen.tls_direct import (
    BINDING,
    MAX_LINE,
    NAMESPACE,
    BadRequest,
    Request,
    answer,
    parse_request,
    signed_data,
)

if TYPE_CHECKING:
    from limen.proxy.ssh_jump import JumpHost

log = logging.getLogger(__name__)

CHUNK = 256 * 1024  # one read from the node
HIGH_WATER = 1024 * 1024  # bytes queued for either side before the other stops reading


class DirectConnection(asyncio.Protocol):
    """One ``limen-node`` connection: the request line, then the copy both ways."""

    def __init__(self, host: JumpHost) -> None:
        self._host = host
        self._transport: asyncio.Transport | None = None
        self._peer: tuple[str, int] | None = None
        self._line = bytearray()  # the request, until its newline
        self._early: list[bytes] = []  # what came after it, for the node
        self._admitting: asyncio.Task[None] | None = None
        self._login_timer: asyncio.TimerHandle | None = None
        self._identity: JumpIdentity | None = None
        self._route: NodeRoute | None = None
        self._fields: dict[str, Any] = {}
        self._expiry: TimerHandle | None = None
        self._node: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._pump: asyncio.Task[None] | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._can_send = asyncio.Event()
        self._can_send.set()
        self._done = False
        self._closed = asyncio.Event()
        self.bytes_up = 0
        self.bytes_down = 0

    # the jump host's view (JumpHost.connections)

    @property
    def identity(self) -> JumpIdentity | None:
        return self._identity

    def end(self, message: str) -> None:
        """End the connection (a lock, expiry): the node, which tells the person at the
        terminal why, has ended its sessions first; only bytes of theirs pass here."""
        log.info("ending a direct connection of %s: %s",
                 self._identity.user if self._identity else "?", message)
        self._finish(ConnectionAbortedError(message))

    def end_channels_to(self, applies: Callable[[NodeRoute], bool]) -> int:
        if self._route is not None and applies(self._route):
            self._finish(ConnectionAbortedError("the node was removed or locked"))
            return 1
        return 0

    def close(self) -> None:
        self._finish(ConnectionAbortedError("the proxy is shutting down"))

    async def wait_closed(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), 10)

    # asyncio's protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TLS transport is not an asyncio.Transport subclass, but is one.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._peer = (str(peer[0]), int(peer[1])) if peer else None
        self._transport.set_write_buffer_limits(high=HIGH_WATER)
        self._host.connections.add(self)
        loop = asyncio.get_running_loop()
        self._login_timer = loop.call_later(self._host.settings.login_timeout, self._too_slow)

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        if self._node is not None:
            self._to_node(data)
        elif self._admitting is not None:
            self._early.append(data)  # reading is paused: at most this one read
        else:
            self._take_request(data)

    def eof_received(self) -> bool | None:
        # The client is done sending (ssh closed its end): the node reads the end of input
        # after what is queued. asyncio's TLS closes the connection whatever is returned.
        if self._node is not None and not self._done:
            with contextlib.suppress(OSError, RuntimeError):
                writer = self._node[1]
                if writer.can_write_eof() and not writer.is_closing():
                    writer.write_eof()
        return None

    def pause_writing(self) -> None:
        self._can_send.clear()

    def resume_writing(self) -> None:
        self._can_send.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._node is not None and not self._done:
            self._done = True  # the client left: the node gets what was queued, then EOF
            self._node[1].close()
            self._wrap_up(exc)
        else:
            self._finish(exc)

    # the request

    def _take_request(self, data: bytes) -> None:
        self._line += data
        end = self._line.find(b"\n")
        if end < 0:
            if len(self._line) > MAX_LINE:
                self._refuse_stranger("the request line is too long")
            return
        line, rest = bytes(self._line[:end]), bytes(self._line[end + 1:])
        self._line = bytearray()
        if rest:
            self._early.append(rest)
        assert self._transport is not None
        self._transport.pause_reading()  # until the node is dialed
        self._admitting = asyncio.get_running_loop().create_task(self._admit(line))

    def _too_slow(self) -> None:
        if self._identity is None and not self._done:
            self._refuse_stranger("no request came in time")

    def _refuse_stranger(self, reason: str) -> None:
        """Refuse before any request was read, from a callback: audited in the background."""
        self._host.emit("auth", self._auth_fields(False, "", reason))
        self._refuse(reason)

    async def _admit(self, line: bytes) -> None:
        try:
            await self._admit_request(line)
        except Exception:  # a bug must not leave the client waiting, nor the task unread
            log.exception("direct connection: the request failed")
            self._refuse("the proxy failed to handle the request")

    async def _admit_request(self, line: bytes) -> None:
        try:
            request = parse_request(line)
        except BadRequest as exc:
            await self._refused_auth("", exc.message)
            return
        try:
            self._identity = self._authenticate(request)
        except LimenError as exc:
            await self._refused_auth(request.login, exc.message)
            return
        if self._login_timer is not None:
            self._login_timer.cancel()
        if self._done:
            return
        await self._host.notify("auth", self._auth_fields(True, request.login, ""))
        self._expiry = await self._host.watch_expiry(self._identity, self.end)
        if self._done:  # it ended while the policy was asked: no timer outlives it
            if self._expiry is not None:
                self._expiry.cancel()
            return
        await self._connect(self._identity, request)

    def _authenticate(self, request: Request) -> JumpIdentity:
        """Who signed: the certificate judged as the jump host judges it, then the
        signature over the request and this TLS connection. LimenError says why not."""
        facts: CertFacts = read_certificate(request.cert)
        host = self._host
        judge_user(facts, request.login, host.trusted, host.clock.now(),
                   self._peer[0] if self._peer else None, key_id_logs_in=True)
        binding = self._binding()
        if binding is None:
            raise BadParameter("direct connections to nodes need TLS 1.3")
        data = signed_data(binding, request.node, request.port, request.login, facts.blob)
        check_sshsig(facts, data, request.signature, NAMESPACE)
        return JumpIdentity.from_cert(facts, request.login, self._peer)

    def _binding(self) -> bytes | None:
        """This TLS connection's channel binding, or None when it is not TLS 1.3 (whose
        every handshake is a full one: no renegotiation, no resumption across keys)."""
        assert self._transport is not None
        tls = self._transport.get_extra_info("ssl_object")
        if tls is None or tls.version() != "TLSv1.3":
            return None
        binding = tls.get_channel_binding(BINDING)
        return bytes(binding) if binding else None

    async def _connect(self, ident: JumpIdentity, request: Request) -> None:
        fields: dict[str, Any] = {
            "server_hostname": request.node, "port": request.port, "user": ident.user,
            "login": ident.login, "addr.remote": ident.remote_addr,
        }
        try:
            route, reader, writer = await self._host.dial(ident, request.node)
        except LimenError as exc:
            await self._host.notify("proxy.connect", {**fields, "allowed": False,
                                                      "reason": exc.message})
            self._refuse(exc.message)
            return
        except Exception as exc:  # a bug must not leave the client waiting
            log.exception("direct connection: dialing node %r failed", request.node)
            await self._host.notify("proxy.connect", {**fields, "allowed": False,
                                                      "reason": repr(exc)})
            self._refuse(f"the proxy could not reach node '{request.node}'")
            return
        if self._done:  # the client left (or a lock ended it) while the node was dialed
            writer.transport.abort()
            return
        fields.update(server_hostname=route.name, server_id=route.node_id)
        self._route, self._fields = route, fields
        await self._host.notify("proxy.connect", {**fields, "allowed": True})
        if self._done:
            writer.transport.abort()
            return
        self._start_copy(reader, writer)

    def _refuse(self, reason: str) -> None:
        """Say why in one line, then close; nothing reached a node."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(answer(reason))
        self._finish(None)

    async def _refused_auth(self, login: str, reason: str) -> None:
        await self._host.notify("auth", self._auth_fields(False, login, reason))
        self._refuse(reason)

    def _auth_fields(self, success: bool, login: str, reason: str) -> dict[str, Any]:
        ident = self._identity
        fields: dict[str, Any] = {
            "success": success, "method": "cert", "kind": "tls",
            "user": ident.user if ident else "", "login": login,
            "addr.remote": self._peer[0] if self._peer else "",
        }
        if ident:
            fields.update(principals=list(ident.principals),
                          valid_before=ident.valid_before.isoformat(),
                          cert_serial=ident.serial, key_fingerprint=ident.fingerprint)
        if reason:
            fields["reason"] = reason
        return fields

    # the copy

    def _start_copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._transport is not None
        self._node = (reader, writer)
        self._transport.write(answer())
        early, self._early = self._early, []
        for data in early:
            self._to_node(data)
        self._pump = asyncio.get_running_loop().create_task(self._node_to_client())
        if self._drainer is None:
            self._transport.resume_reading()

    def _to_node(self, data: bytes) -> None:
        assert self._node is not None and self._transport is not None
        writer = self._node[1]
        if writer.is_closing():  # the node's socket failed on an earlier write
            self._finish(ConnectionResetError("the node closed the connection"))
            return
        self.bytes_up += len(data)
        writer.write(data)
        if self._drainer is None and writer.transport.get_write_buffer_size() > HIGH_WATER:
            self._transport.pause_reading()
            self._drainer = asyncio.get_running_loop().create_task(self._drain_node())

    async def _drain_node(self) -> None:
        assert self._node is not None and self._transport is not None
        try:
            await self._node[1].drain()
        except (ConnectionError, OSError) as exc:
            self._finish(exc)
            return
        self._drainer = None
        if not self._done:
            self._transport.resume_reading()

    async def _node_to_client(self) -> None:
        assert self._node is not None and self._transport is not None
        reader, transport = self._node[0], self._transport
        try:
            while data := await reader.read(CHUNK):
                self.bytes_down += len(data)
                transport.write(data)
                if not self._can_send.is_set():
                    await self._can_send.wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure on either side ends both
            self._finish(exc)
            return
        self._finish(None)  # the node ended its side: SSH is over, close after the queue

    # the end

    def _finish(self, exc: Exception | None) -> None:
        """Close both sides once; from any callback. An error drops what is queued."""
        if self._done:
            return
        self._done = True
        if self._node is not None:
            writer = self._node[1]
            if exc is not None and writer.transport is not None:
                writer.transport.abort()
            else:
                writer.close()
        if self._transport is not None:
            if exc is not None and self._node is not None:
                self._transport.abort()
            else:
                self._transport.close()  # a refusal's answer line goes out first
        self._wrap_up(exc)

    def _wrap_up(self, exc: Exception | None) -> None:
        # Not the admission: it checks _done after each wait, and its audit events must
        # not be cut short.
        for task in (self._pump, self._drainer):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        for timer in (self._login_timer, self._expiry):
            if timer is not None:
                timer.cancel()
        self._host.connections.discard(self)
        if self._node is not None:
            end = {**self._fields, "bytes_up": self.bytes_up, "bytes_down": self.bytes_down}
            if exc is not None:
                end["error"] = str(exc) or type(exc).__name__
            self._host.emit("proxy.disconnect", end)
        self._closed.set()

"""The proxy's end of tunneled nodes' data connections (the wire: limen.tunnel.data_link).

``DataGate.dial_back`` asks a node, inside its tunnel, for a connection and waits for
it; ``DataGate.admit`` takes every connection that opens like one, wherever it landed
(the tunnel port, or the multiplexed web port), and hands it to the waiting ask if its
ticket is one the gate issued, not yet used, and it comes from the address the node's
tunnel comes from. Anything else is closed and audited: a ticket is a secret, and a
connection offering a wrong one is someone trying.

A failed ask is no failure of the session: the caller (registry.Tunnel.open_stream)
falls back to a channel inside the tunnel, and stops asking that tunnel for a while, so
a node whose dial-back cannot get through (a firewall that passes only TLS, a NAT that
changes the address) costs a user the wait once, not at every session.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import asyncssh

from limen.tcpkeepalive import keep_alive
from limen.tunnel.data_link import (
    ANSWER_LIMIT,
    ANSWER_OK,
    DATA_PORT,
    PREAMBLE_SIZE,
    looks_like_data,
    new_ticket,
    ticket_of_preamble,
)

log = logging.getLogger(__name__)

DIAL_TIMEOUT = 3.0  # the node's answer and its connection together (it dials for 2 s)
PREAMBLE_TIMEOUT = 5.0  # a data connection's first line, like a handshake
STREAM_LIMIT = 1024 * 1024  # as a direct node's stream (proxy.ssh_routes.STREAM_LIMIT)

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Emit = Callable[[str, dict[str, Any]], None]


class DialBackFailed(Exception):
    """The node gave no data connection; ``reason`` says why, for the proxy's log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Expected:
    node_id: str
    peer_host: str  # the tunnel's address: the data connection must come from it
    stream: asyncio.Future[Stream]


class DataGate:
    def __init__(self, emit: Emit | None = None) -> None:
        # By the ticket's SHA-256, so a lookup compares digests, never the secret.
        self._expected: dict[bytes, _Expected] = {}
        self._emit = emit
        self.admitted = 0
        self.refused = 0

    async def dial_back(self, conn: asyncssh.SSHServerConnection, node_id: str,
                        peer_host: str, orig_host: str) -> Stream:
        """Ask the node behind ``conn`` for a data connection; raise DialBackFailed."""
        ticket = new_ticket()
        key = _digest(ticket)
        waiter: asyncio.Future[Stream] = asyncio.get_running_loop().create_future()
        self._expected[key] = _Expected(node_id, peer_host, waiter)
        claimed = False
        try:
            async with asyncio.timeout(DIAL_TIMEOUT):
                answer = await _ask(conn, node_id, orig_host, ticket)
                if answer != ANSWER_OK:
                    raise DialBackFailed(f"the node answered: {_printable(answer)}")
                stream = await waiter
                claimed = True
                return stream
        except TimeoutError:
            raise DialBackFailed(f"no data connection within {DIAL_TIMEOUT:g} s") from None
        except (asyncssh.Error, OSError) as exc:
            raise DialBackFailed(f"the ask failed: {exc}") from None
        finally:
            del self._expected[key]
            if not claimed:
                _close_unclaimed(waiter)

    async def admit(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A connection that opened like a data connection: hand it over, or close it."""
        peer = writer.get_extra_info("peername")
        peer_host = str(peer[0]) if peer else ""
        try:
            async with asyncio.timeout(PREAMBLE_TIMEOUT):
                first = await reader.readexactly(PREAMBLE_SIZE)
        except (TimeoutError, asyncio.IncompleteReadError, OSError):
            writer.close()
            return
        ticket = ticket_of_preamble(first)
        expected = self._expected.get(_digest(ticket)) if ticket else None
        reason = _refusal(expected, peer_host, ticket)
        if reason is not None or expected is None:
            self._refuse(peer_host, expected, reason or "")
            writer.close()
            return
        keep_alive(writer.get_extra_info("socket"))
        self.admitted += 1
        expected.stream.set_result((reader, writer))

    def _refuse(self, peer_host: str, expected: _Expected | None, reason: str) -> None:
        self.refused += 1
        log.warning("refused a tunnel data connection from %s: %s", peer_host, reason)
        if self._emit is not None:
            node = {"server_id": expected.node_id} if expected is not None else {}
            self._emit("auth", {"success": False, "method": "ticket", "kind": "tunnel-data",
                                "user": expected.node_id if expected else "",
                                "addr.remote": peer_host, "reason": reason, **node})


def _refusal(expected: _Expected | None, peer_host: str, ticket: str | None) -> str | None:
    if ticket is None:
        return "it did not open with a data connection's ticket line"
    if expected is None:
        return "its ticket is unknown, used or expired"
    if expected.stream.done():
        return "its ticket was used already"
    if expected.peer_host != peer_host:
        # Not consumed: the node itself may still come with it.
        return (f"its ticket was issued to node {expected.node_id}'s tunnel from "
                f"{expected.peer_host}, not to {peer_host}")
    return None


async def _ask(conn: asyncssh.SSHServerConnection, node_id: str, orig_host: str,
               ticket: str) -> bytes:
    """The ask, a channel to (node id, DATA_PORT): the node's one-line answer."""
    reader, writer = await conn.open_connection(node_id, DATA_PORT, orig_host, 0)
    try:
        writer.write(ticket.encode() + b"\n")
        answer = b""
        while b"\n" not in answer and len(answer) < ANSWER_LIMIT:
            chunk = await reader.read(ANSWER_LIMIT - len(answer))
            if not chunk:
                break
            answer += chunk
        return answer
    finally:
        writer.close()


def _close_unclaimed(waiter: asyncio.Future[Stream]) -> None:
    """A connection admitted just as the ask gave up is nobody's: close it."""
    if not waiter.done():
        waiter.cancel()  # and a connection that comes later finds its ticket gone
    elif not waiter.cancelled() and waiter.exception() is None:
        waiter.result()[1].close()


def _printable(answer: bytes) -> str:
    """A node's answer for the proxy's log: its first line, short, nothing unprintable
    (a node is a client: it writes no lines of its own into the proxy's log)."""
    line = answer.partition(b"\n")[0].decode(errors="replace")[:80]
    return "".join(c if c.isprintable() else "?" for c in line).strip() or "nothing"


def _digest(ticket: str | None) -> bytes:
    return hashlib.sha256((ticket or "").encode()).digest()


class FirstBytes(asyncio.Protocol):
    """A connection to the dedicated tunnel port until its first byte says what it is:
    an agent's SSH connection (``SSH-2.0-...``) or a node's data connection (``L``).

    Whoever sends nothing within ``timeout`` is dropped; SSH's own login timeout starts
    after."""

    def __init__(self, ssh: Callable[[], asyncio.Protocol], gate: DataGate,
                 timeout: float) -> None:
        self._ssh = ssh
        self._gate = gate
        self._timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A read-write transport (not checked by isinstance: uvloop's are not asyncio's).
        self._transport = cast(asyncio.Transport, transport)
        self._timer = asyncio.get_running_loop().call_later(self._timeout,
                                                            self._transport.abort)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        if self._timer is not None:
            self._timer.cancel()
        is_data = looks_like_data(data[:1])
        protocol = self._data(transport) if is_data else self._ssh()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(data)

    def _data(self, transport: asyncio.Transport) -> asyncio.Protocol:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=STREAM_LIMIT)
        protocol = asyncio.StreamReaderProtocol(reader)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        task = loop.create_task(self._gate.admit(reader, writer))
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)
        return protocol

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()


_TASKS: set[asyncio.Task[None]] = set()  # admissions in flight: held, not collected

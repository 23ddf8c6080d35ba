"""Three changes to asyncssh's packet path: no empty SSH_MSG_IGNORE ahead of every packet
it sends, large reads parsed a packet's size at a time, and a server's reads acknowledged
at once until the client has logged in.

After key exchange asyncssh (2.24) puts an empty SSH_MSG_IGNORE before every packet it
sends: the countermeasure RFC 4251 (section 9.3.1) describes against chosen-plaintext
attacks on CBC mode, whose next IV the attacker could otherwise predict. Limen offers
no CBC cipher (limen.sshalgs: AEAD, or CTR with encrypt-then-MAC), and OpenSSH sends no
such packets. Here each one doubles a packet's work: a second packet built, encrypted
and authenticated, and written to the socket on its own (inside a tunnel or TLS, a
record of its own). ``install`` drops them where the cipher sending is not CBC, and
leaves everything else as asyncssh has it.

Why patches rather than options: asyncssh has none for either, and its endpoints (the
node, the jump host, the tunnel server, the agent) are made by asyncssh's own listen()
and connect() from a connection class of its own. The test
tests/node/test_wire_packets.py checks on the wire, with stock OpenSSH's own log, that
the packets are gone, and that they stay with a CBC cipher.

``install`` also hands asyncssh a large read (over SPLIT_ABOVE) in pieces of PIECE
bytes. asyncssh keeps unparsed input in one bytes object and, for each packet it
takes, slices off the header and then the packet, copying all that follows each
time: a read of n bytes holding k packets costs about n * k bytes of copying. uvloop's
TLS hands over up to 256 KiB at once, eight packets of bulk data: the proxy relaying
SSH inside TLS spent a quarter of its busy time in memmove (py-spy), and 10 to 20% more
CPU per GB than with the pieces (README, Benchmarks). Pieces of one packet's size keep
the copying linear, and asyncssh sees the same bytes in the same order.

A server acknowledges each read at once (TCP_QUICKACK) until the client has logged in.
OpenSSH's ssh leaves Nagle's algorithm on until its session starts, and twice in its
handshake it writes a small packet while the one before is not yet acknowledged: its
key exchange message after its KEXINIT, and its service request after NEWKEYS. Nagle
holds the small one back until the ACK comes, and Linux delays that ACK (the server has
nothing to send yet) by 40 ms: `strace` of both ends showed two such waits in each jump
host handshake, 80 of its 95 ms. An immediate ACK after each read lets the packet go.
The kernel forgets the setting as soon as the connection turns interactive, so it is set
again after each read of the handshake (a system call each, about ten a connection).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from typing import Any

from asyncssh.connection import SSHConnection
from asyncssh.constants import MSG_IGNORE
from asyncssh.packet import String

_EMPTY = String(b"")
MARK = "_limen_installed"  # on the wrappers
# OpenSSH and asyncssh send bulk data 32 KiB a packet; smaller pieces would copy the
# unparsed rest of a packet more often as it grows, larger ones the packets after it.
PIECE = 32 * 1024
# Reads up to this size go to asyncssh as they are: a plain TCP read on loopback holds
# a packet or two, where splitting costs as much as it saves (bench A/B). Reads through
# TLS come joined, up to 256 KiB.
SPLIT_ABOVE = 4 * PIECE


def install() -> None:
    """Both changes, once per process."""
    _wrap("send_packet", _without_cbc_ignores)
    install_receive()


def install_receive() -> None:
    """The receive change alone (its test installs it around spies of its own)."""
    _wrap("data_received", _in_pieces)


def _wrap(name: str, make: Callable[[Callable[..., None]], Callable[..., None]]) -> None:
    """Replace SSHConnection's method ``name`` with ``make(original)``, unless a wrapper
    of ours is there already."""
    original = getattr(SSHConnection, name)
    if getattr(original, MARK, False):
        return
    wrapper = make(original)
    setattr(wrapper, MARK, True)
    wrapper.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(SSHConnection, name, wrapper)


def _without_cbc_ignores(original: Callable[..., None]) -> Callable[..., None]:
    def send_packet(self: SSHConnection, pkttype: int, *args: bytes,
                    handler: Any = None) -> None:
        if pkttype == MSG_IGNORE and args == (_EMPTY,) and not _sends_cbc(self):
            return
        original(self, pkttype, *args, handler=handler)

    return send_packet


def _sends_cbc(conn: SSHConnection) -> bool:
    alg: bytes = conn._enc_alg_cs if conn.is_client() else conn._enc_alg_sc
    return b"-cbc" in alg


def _in_pieces(original: Callable[..., None]) -> Callable[..., None]:
    def data_received(self: SSHConnection, data: bytes, datatype: Any = None) -> None:
        if not self._auth_complete and self.is_server():
            _ack_now(self)
        if len(data) <= SPLIT_ABOVE:
            original(self, data, datatype)
            return
        start = 0
        # While a packet's handler runs as a task, asyncssh only gathers input: then the
        # rest goes in one piece, as it came.
        while len(data) - start > PIECE and _parsing(self):
            original(self, data[start:start + PIECE], datatype)
            start += PIECE
        original(self, data[start:] if start else data, datatype)

    return data_received


def _ack_now(conn: SSHConnection) -> None:
    """Send the ACK for what was just read now, not after the kernel's delay."""
    sock = conn._transport.get_extra_info("socket") if conn._transport else None
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):  # not TCP: a pipe, a tunnel's channel
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


def _parsing(conn: SSHConnection) -> bool:
    """Whether asyncssh's receive handler is one of its parsing methods (not the
    stand-in that holds input back while a packet's handler runs)."""
    return getattr(conn._recv_handler, "__self__", None) is conn

"""asyncssh without the empty SSH_MSG_IGNORE it sends ahead of every packet.

After key exchange asyncssh (2.24) puts an empty SSH_MSG_IGNORE before every packet it
sends: the countermeasure RFC 4251 (section 9.3.1) describes against chosen-plaintext
attacks on CBC mode, whose next IV the attacker could otherwise predict. Limen offers
no CBC cipher (limen.sshalgs: AEAD, or CTR with encrypt-then-MAC), and OpenSSH sends no
such packets. Here each one doubles a packet's work: a second packet built, encrypted
and authenticated, and written to the socket on its own (inside a tunnel or TLS, a
record of its own). ``install`` drops them where the cipher sending is not CBC, and
leaves everything else as asyncssh has it.

Why a patch rather than an option: asyncssh has none for it, and its endpoints (the
node, the jump host, the tunnel server, the agent) are made by asyncssh's own listen()
and connect() from a connection class of its own. The test
tests/node/test_wire_packets.py checks on the wire, with stock OpenSSH's own log, that
the packets are gone, and that they stay with a CBC cipher.
"""

from __future__ import annotations

from typing import Any

from asyncssh.connection import SSHConnection
from asyncssh.constants import MSG_IGNORE
from asyncssh.packet import String

_EMPTY = String(b"")
MARK = "_limen_no_cbc_ignore"  # on the wrapper: installed


def install() -> None:
    """Wrap asyncssh's send_packet once per process."""
    original = SSHConnection.send_packet
    if getattr(original, MARK, False):
        return

    def send_packet(self: SSHConnection, pkttype: int, *args: bytes,
                    handler: Any = None) -> None:
        if pkttype == MSG_IGNORE and args == (_EMPTY,) and not _sends_cbc(self):
            return
        original(self, pkttype, *args, handler=handler)

    setattr(send_packet, MARK, True)
    SSHConnection.send_packet = send_packet  # type: ignore[method-assign]


def _sends_cbc(conn: SSHConnection) -> bool:
    alg: bytes = conn._enc_alg_cs if conn.is_client() else conn._enc_alg_sc
    return b"-cbc" in alg

"""What a tunneled node's data connection says before its SSH stream, on both sides.

A session to a tunneled node need not cross the tunnel's own SSH connection: there,
every byte of the user's (already end-to-end encrypted) SSH stream is framed and
encrypted again, and through the web port wrapped in TLS a third time, which halves
the throughput (bench/tunnel.py). So the proxy asks the node, inside the tunnel, to
dial back one plain TCP connection for the session (limen.tunnel.data_gate), and the
node does (limen.tunnel.data_dialer). That connection then carries the user's SSH
stream exactly as a direct node's TCP connection does.

The ask travels as a ``forwarded-tcpip`` channel to (node id, DATA_PORT) carrying a
ticket; the node answers ``ok`` or ``no <why>``. Its data connection opens with
``LIMEN-DATA <ticket>\\n`` and the ticket admits it once. Only the authenticated tunnel
carries tickets; only the node's own tunnel target is dialed (the proxy names no
address); and what a stolen ticket buys is one connection that the user's SSH client
still checks against the node's host certificate.
"""

from __future__ import annotations

import re
import secrets

# The port a data request names in its channel: as with NODE_PORT, nothing listens on it.
DATA_PORT = 65022  # no service of ours uses it
PREFIX = b"LIMEN-DATA "
TICKET_HEX = 64  # 32 random bytes
PREAMBLE_SIZE = len(PREFIX) + TICKET_HEX + 1
ANSWER_OK = b"ok\n"
ANSWER_LIMIT = 256  # an answer is a line at most this long
_TICKET = re.compile(rb"[0-9a-f]{%d}" % TICKET_HEX)


def new_ticket() -> str:
    return secrets.token_hex(TICKET_HEX // 2)


def preamble(ticket: str) -> bytes:
    return PREFIX + ticket.encode() + b"\n"


def ticket_of_line(line: bytes) -> str | None:
    """The ticket in a request line (``<ticket>\\n``), or None if it is not one."""
    body = line.rstrip(b"\n")
    return body.decode() if _TICKET.fullmatch(body) else None


def ticket_of_preamble(data: bytes) -> str | None:
    """The ticket in a data connection's first PREAMBLE_SIZE bytes, or None."""
    if len(data) != PREAMBLE_SIZE or not data.startswith(PREFIX) or not data.endswith(b"\n"):
        return None
    return ticket_of_line(data[len(PREFIX):])


def looks_like_data(first: bytes) -> bool:
    """Whether a connection's first bytes (any number) may be a data connection's."""
    return bool(first) and PREFIX.startswith(first[:len(PREFIX)])

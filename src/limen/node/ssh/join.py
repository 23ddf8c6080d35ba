"""``join SESSION_ID --mode MODE``: a channel that joins a live session on this node.

The command is how every client asks (``limen join``, the web UI's Join, stock
``ssh -t NODE join SID``); the node decides. The joiner must be allowed on this node
with the login they came with (locks and node access as for any session), and the
owner's current roles must be covered by one of the joiner's current roles'
``join_sessions`` rules in that mode (limen.rbac.joining, deny wins). Nothing the joiner
sends is believed except which session and mode they ask for.

Observers and moderators cannot type: Ctrl-C or ``q`` leaves, and a moderator's ``t``
ends the session. A peer's keystrokes reach the session's process; a peer leaves by
closing their connection (``~.`` in ssh). Each join and leave is audited with its mode
(``session.join`` / ``session.leave``); a refused join is a ``session.join`` failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncssh

from limen.errors import AccessDenied, LimenError
from limen.node.ssh.sharing import Party, SharedSession
from limen.resources.session_policy import JOIN_MODES

if TYPE_CHECKING:
    from limen.node.ssh.connection import NodeConnection
    from limen.node.ssh.session import SessionContext

log = logging.getLogger(__name__)

# A joiner who stops reading is let go before the node buffers this much for them.
MAX_BEHIND = 4 * 1024 * 1024
LEAVE_KEYS = (b"\x03", b"q")
END_KEY = b"t"


@dataclass(frozen=True)
class JoinRequest:
    session_id: str
    mode: str
    end: bool = False  # limen sessions kill: join as moderator and end it at once


def parse_join(kind: str, command: str | None) -> JoinRequest | None:
    """The request, when the command is the join contract; None for any other command
    (coreutils' join keeps working: its arguments never look like this)."""
    if kind != "exec" or not command:
        return None
    words = command.split()
    if len(words) < 2 or words[0] != "join":
        return None
    rest = words[2:]
    end = rest[-1:] == ["--end"]
    if end:
        rest = rest[:-1]
    if rest and (len(rest) != 2 or rest[0] != "--mode"):
        return None
    mode = rest[1] if rest else "observer"
    return JoinRequest(words[1], mode, end)


def _session_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise AccessDenied(f"{text[:64]!r} is not a session id (see limen sessions ls)") from None


class JoinChannel:
    """The joiner's side of one join: set up by the session channel for a join command."""

    def __init__(self, conn: NodeConnection, chan: asyncssh.SSHServerChannel[bytes],
                 term_type: str | None, request: JoinRequest) -> None:
        self.conn = conn
        self.chan = chan
        self.request = request
        self._eol = "\r\n" if term_type is not None else "\n"
        self._party: Party | None = None
        self._shared: SharedSession | None = None
        self._done = asyncio.Event()

    # -- what the session channel forwards ------------------------------------------

    def data_received(self, data: bytes) -> None:
        party, shared = self._party, self._shared
        if party is None or shared is None:
            return
        if party.mode == "peer":
            shared.type(party, data)
        elif party.mode == "moderator" and END_KEY in data:
            self.conn.node.spawn(shared.end_by(party))
        elif any(key in data for key in LEAVE_KEYS):
            self._done.set()

    def lost(self) -> None:
        self._done.set()

    # -- the join ----------------------------------------------------------------------

    async def run(self) -> None:
        ctx: SessionContext | None = None
        try:
            sid = _session_id(self.request.session_id)
            ctx = self._local_session(sid)
            await self._admit(ctx)
        except LimenError as exc:
            await self._refuse(exc.message, ctx)
            return
        except Exception:  # a bug: refuse this join, keep the connection
            log.exception("joining session %s failed", self.request.session_id)
            await self._refuse("cannot join: internal error", ctx)
            return
        await self._attend(ctx)

    def _local_session(self, sid: str) -> SessionContext:
        ctx = self.conn.node.sessions.get(sid)
        if ctx is None or ctx.ended:
            raise AccessDenied(f"no live session {sid} on this node "
                               f"({self.conn.settings.server_name})")
        if ctx.shared is None:
            raise AccessDenied(f"session {sid} has no terminal: only interactive sessions "
                               "can be joined")
        return ctx

    async def _admit(self, ctx: SessionContext) -> None:
        identity = self.conn.identity
        if self.request.mode not in JOIN_MODES:
            raise AccessDenied(f"{self.request.mode[:32]!r} is not a join mode: use "
                               f"{', '.join(JOIN_MODES)}")
        if self.request.end and self.request.mode != "moderator":
            raise AccessDenied("only a moderator can end a session")
        await self.conn.authorize("exec", {"command": "join", "session_id": ctx.id})
        assert identity is not None
        roles = await self.conn.node.policy.check_join(identity, ctx.identity.user,
                                                       self.request.mode)
        assert ctx.shared is not None
        self._shared = ctx.shared
        self._party = Party(identity.user, self.request.mode, roles, self._write, self._say,
                            self._end)

    async def _attend(self, ctx: SessionContext) -> None:
        party, shared = self._party, self._shared
        assert party is not None and shared is not None
        await self._emit("session.join", ctx, success=True)
        if self.request.end:
            self._say(f"limen: ending session {ctx.id}")
            await shared.end_by(party)
        else:
            self._say(self._greeting(ctx, party))
            shared.join(party)
            with contextlib.suppress(asyncio.CancelledError):
                await self._done.wait()
            shared.leave(party)
        await self._emit("session.leave", ctx)
        self._exit(0)

    def _greeting(self, ctx: SessionContext, party: Party) -> str:
        size = f", {ctx.term_size.cols}x{ctx.term_size.rows}" if ctx.term_size else ""
        keys = {"peer": "you can type; close the connection (~.) to leave",
                "observer": "you cannot type; Ctrl-C or q leaves",
                "moderator": "you cannot type; t ends the session, Ctrl-C or q leaves"}
        return (f"limen: joined {ctx.identity.user}'s session {ctx.id} as {party.mode}"
                f"{size}; {keys[party.mode]}")

    async def _refuse(self, reason: str, ctx: SessionContext | None) -> None:
        self._say(f"limen: {reason}")
        await self._emit("session.join", ctx, success=False, error=reason)
        self._exit(1)

    async def _emit(self, name: str, ctx: SessionContext | None, **extra: Any) -> None:
        # The sid only of a session of this node: another node's id is not ours to name.
        sid = {"sid": ctx.id} if ctx is not None else {}
        await self.conn.node.emit(name, self.conn.base_fields(
            mode=self.request.mode[:32], **sid, **extra))

    # -- the party's channel -------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._done.is_set():
            return
        if self.chan.get_write_buffer_size() > MAX_BEHIND:
            self._say("limen: you fell too far behind the session; leaving")
            self._done.set()
            return
        with contextlib.suppress(OSError):
            self.chan.write(data)

    def _say(self, line: str) -> None:
        with contextlib.suppress(OSError):
            self.chan.write((self._eol + line + self._eol).encode(), asyncssh.EXTENDED_DATA_STDERR)

    def _end(self, message: str) -> None:
        self._say(message)
        self._done.set()

    def _exit(self, status: int) -> None:
        try:
            self.chan.write_eof()
            self.chan.exit(status)
        except OSError:
            self.chan.close()

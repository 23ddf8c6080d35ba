"""What a session needs to audit file transfers from the bytes it relays.

A ``TransferFollower`` (sftp.SftpFollower, scp_stream.ScpFollower) reads both directions
of a transfer and turns them into audit events. The ``TransferGate`` gives it every chunk
the user sends before the process gets it (``from_user``; ``take_input`` says which bytes
may go on) and every chunk the process prints before the user gets it (``to_user``), and
hands the events out before those bytes move on: an event is on record before the
acknowledgement of what it records reaches the user. A stream that breaks its protocol
ends the session: the node never relays what it could not follow.

``SftpSniffer`` recognises SFTP by its first bytes: a session whose input begins with an
SFTP INIT packet is an SFTP session, whatever command it runs (``sftp -s PROGRAM`` execs
the program instead of asking for the sftp subsystem). The first few bytes are held back
until it can tell; anything that cannot be the start of an INIT packet goes on at once.
Every INIT sftp-server would take counts (any version, any length it accepts), so that
none slips past ``ssh_file_copy: false``; the price is that a plain command whose input
happens to begin like one (an .ico file piped to ``cat``) is taken for SFTP too.
"""

from __future__ import annotations

import asyncio
import posixpath
import shutil
from collections.abc import Callable
from typing import Any, Protocol

from limen.errors import BadParameter
from limen.node.process.executor import ProcessSpec, spawn
from limen.node.process.inbox import Write
from limen.node.process.users import LocalUser
from limen.transfer import sftp_wire as wire

Event = dict[str, Any]
_HEADER = 5  # uint32 length, byte type


class TransferFollower(Protocol):
    event: str  # the audit event's name: "sftp" or "scp"

    @property
    def holding(self) -> bool:
        """User bytes wait for the process's answer before they can be understood."""
        ...

    def from_user(self, data: bytes) -> None: ...
    def take_input(self) -> bytes: ...
    def to_user(self, data: bytes) -> None: ...
    def take_events(self) -> list[Event]: ...
    def finish(self) -> list[Event]: ...


class SftpSniffer:
    """Decides from the first bytes of a session's input whether it speaks SFTP."""

    def __init__(self) -> None:
        self._held = b""
        self.verdict: bool | None = None  # None until it can tell

    def take(self, chunk: bytes) -> bytes:
        """Returns the bytes that can go on now (all of them once the verdict is in)."""
        if self.verdict is not None:
            return chunk
        head = self._held + chunk
        if not _could_start_init(head):
            self.verdict, self._held = False, b""
            return head
        if len(head) < _HEADER:
            self._held = head
            return b""
        self.verdict, self._held = True, b""
        return head

    def at_eof(self) -> bytes:
        held, self._held = self._held, b""
        self.verdict = False
        return held


def _could_start_init(head: bytes) -> bool:
    """Whether ``head`` is (the start of) ``uint32 length, byte SSH_FXP_INIT`` with a
    length sftp-server would take."""
    if len(head) < 4:  # some length in range must begin with these bytes
        pad = 4 - len(head)
        lowest = int.from_bytes(head + b"\0" * pad, "big")
        highest = int.from_bytes(head + b"\xff" * pad, "big")
        return highest >= 5 and lowest <= wire.MAX_REQUEST
    length = int.from_bytes(head[:4], "big")
    if not 5 <= length <= wire.MAX_REQUEST:
        return False
    return len(head) == 4 or head[4] == wire.INIT


def display_path(cwd: str, path: str) -> str:
    """A path as the audit shows it: absolute against the session's directory."""
    return posixpath.join(cwd, path)


async def is_directory_for(user: LocalUser, path: str, cwd: str, env: dict[str, str]) -> bool:
    """Whether ``path`` is a directory, as the user sees it (asked as the user, never as
    the node's root: the answer must not depend on what the user may not look at)."""
    test = shutil.which("test", path="/usr/bin:/bin")
    if test is None:
        return False
    try:
        child = await spawn(ProcessSpec(user, (test, "-d", path), env, cwd))
    except OSError:  # then the paths shown are the target's own, which scp may extend
        return False
    try:
        child.close_stdin()
        return (await child.wait()).code == 0
    finally:
        child.close()


class GateHooks(Protocol):
    async def emit(self, name: str, fields: Event) -> None:
        """Report one transfer event (the session adds its own fields)."""
        ...

    async def sftp_started(self) -> TransferFollower | None:
        """The input turned out to be SFTP: its follower, or None when it is refused."""
        ...

    async def broken(self, name: str, reason: str) -> None:
        """The stream broke its protocol: report it and end the session."""
        ...


class TransferGate:
    """Between a session's input and its process, and on its output: sniffs SFTP, follows
    transfers, and lets user bytes through only once they are understood."""

    def __init__(self, follower: TransferFollower | None, sniff: bool, hooks: GateHooks) -> None:
        self.follower = follower
        self._sniffer = SftpSniffer() if sniff else None
        self._hooks = hooks
        self._progress = asyncio.Event()  # the process answered: held bytes may go on
        self._reporting: asyncio.Future[None] | None = None  # events on their way
        self.broken = False

    @property
    def following(self) -> bool:
        return self.follower is not None and not self.broken

    # -- the user's input (InputGate) ---------------------------------------------------------

    async def pass_on(self, chunk: bytes, write: Write) -> bool:
        if self.broken:
            return False
        if self._sniffer is not None:
            chunk = self._sniffer.take(chunk)
            if self._sniffer.verdict is None:
                return True  # a few bytes held until the sniffer can tell
            found, self._sniffer = self._sniffer.verdict, None
            if found:
                self.follower = await self._hooks.sftp_started()
                if self.follower is None:
                    return False
        if self.follower is None:
            if chunk:
                await write(chunk)
            return True
        return await self._follow(chunk, write)

    async def _follow(self, chunk: bytes, write: Write) -> bool:
        follower = self.follower
        assert follower is not None
        if not await self._step(lambda: follower.from_user(chunk)):
            return False
        while True:
            data = follower.take_input()
            if data:
                await write(data)
            if not follower.holding:
                return True
            self._progress.clear()
            await self._progress.wait()
            if self.broken:
                return False

    async def at_eof(self, write: Write) -> None:
        if self._sniffer is not None:
            held = self._sniffer.at_eof()
            if held:
                await write(held)

    # -- the process's output ---------------------------------------------------------------

    async def from_process(self, data: bytes) -> bool:
        """Follow output on its way to the user; False: the session is ending, drop it."""
        follower = self.follower
        if follower is None:
            return True
        if self.broken or not await self._step(lambda: follower.to_user(data)):
            return False
        self._progress.set()
        return True

    async def finish(self) -> None:
        """The session ended: what the follower still knows about (files never closed)."""
        if self._reporting is not None:
            await self._reporting
        if self.follower is not None and not self.broken:
            for event in self.follower.finish():
                await self._hooks.emit(self.follower.event, event)

    async def _step(self, step: Callable[[], None]) -> bool:
        """Run one follower step, then report its events (and a violation, if any)."""
        follower = self.follower
        assert follower is not None
        try:
            step()
        except BadParameter as exc:
            self.broken = True
            self._progress.set()
            await self._emit_events()
            await self._hooks.broken(follower.event, exc.message)
            return False
        await self._emit_events()
        return True

    async def _emit_events(self) -> None:
        """Report the follower's events, in order. The session stops feeding input when
        its process exits, maybe while an event the input completed is on its way: that
        report goes on (shielded) and ``finish`` waits for it."""
        assert self.follower is not None
        events, name = self.follower.take_events(), self.follower.event
        if not events:
            return
        before = self._reporting

        async def report() -> None:
            if before is not None:
                await before
            for event in events:
                await self._hooks.emit(name, event)

        self._reporting = asyncio.ensure_future(report())
        await asyncio.shield(self._reporting)


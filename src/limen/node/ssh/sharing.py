"""The parties of one shared session, besides its owner, and its moderation.

The owner's channel runs the process and records its output once; every chunk it sends
the owner goes to each party too (``output``). Peers' keystrokes go into the owner's
input queue; observers and moderators cannot type. With ``require_session_join`` in the
owner's roles, the session waits until every requirement has its ``count`` of admitted
moderators, and when that stops being true it ends or pauses (``on_leave``). The owner
and the other parties read a line whenever someone joins or leaves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from limen.resources.session_policy import RequireSessionJoin

Say = Callable[[str], None]


@dataclass(eq=False)
class Party:
    """One joiner: their channel's writer and closer, as the join handler gives them."""

    user: str
    mode: str  # observer, peer or moderator
    roles: list[str]
    write: Callable[[bytes], None]  # session output, as is
    say: Say  # one line, on the party's terminal
    end: Callable[[str], None]  # the session is over: say why, close the channel


class SharedSession:
    def __init__(self, owner: str, say_owner: Say, feed: Callable[[bytes], None],
                 requirements: list[RequireSessionJoin],
                 terminate: Callable[[str, str], Awaitable[None]],
                 spawn: Callable[[Awaitable[None]], None],
                 on_state: Callable[[str], None] = lambda state: None) -> None:
        self.owner = owner
        self._say_owner = say_owner
        self._feed = feed
        self.requirements = requirements
        self._terminate = terminate
        self._spawn = spawn
        self._on_state = on_state  # active, waiting for moderators, paused
        self.parties: list[Party] = []
        self.participants: list[str] = []  # everyone who ever joined, in order
        self._running = asyncio.Event()  # clear while waiting for moderators, or paused
        self.started = False  # the process has been let run once
        self.closed = False
        if self.moderated_enough():
            self._running.set()

    # -- moderation --------------------------------------------------------------------

    def moderated_enough(self) -> bool:
        return all(self._met(req) for req in self.requirements)

    def waiting_line(self) -> str:
        names = ", ".join(f"{r.name} needs {r.count}" for r in self.requirements)
        return f"limen: waiting for a moderator… ({names})"

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    async def wait_running(self) -> None:
        await self._running.wait()

    def _reconsider(self, leaver: Party | None) -> None:
        if self.moderated_enough():
            if self.paused:
                self._running.set()
                self._on_state("active")
                if self.started:
                    self._announce("limen: a moderator is back; the session resumes")
            return
        if not self.started:  # a moderator came and went before the process started
            if not self.paused:
                self._running.clear()
                self._on_state("waiting for moderators")
            return
        if self.paused or leaver is None:
            return
        if any(r.on_leave == "terminate" for r in self.requirements
               if not self._met(r)):
            self._spawn(self._terminate(
                f"limen: the last moderator ({leaver.user}) left; the session ends "
                "(on_leave: terminate)", "moderator left"))
            return
        self._running.clear()
        self._on_state("paused")
        self._announce("limen: the last moderator left; the session is paused until a "
                       "moderator joins (on_leave: pause)")

    def _met(self, req: RequireSessionJoin) -> bool:
        """Enough distinct people other than the owner moderate: nobody watches themself,
        and one person on two channels is one moderator."""
        moderators = {p.user for p in self.parties if p.mode == "moderator"
                      and p.user != self.owner and req.admits(p.user, p.roles)}
        return len(moderators) >= req.count

    # -- parties -----------------------------------------------------------------------

    def join(self, party: Party) -> None:
        if self.closed:  # it ended while the joiner was being judged
            party.end("limen: the session has ended")
            return
        self._announce(f"limen: {party.user} joined as {party.mode}", skip=party)
        self.parties.append(party)
        if party.user not in self.participants:
            self.participants.append(party.user)
        self._reconsider(None)

    def leave(self, party: Party) -> None:
        if party not in self.parties:
            return
        self.parties.remove(party)
        if not self.closed:
            self._announce(f"limen: {party.user} left ({party.mode})")
            self._reconsider(party)

    def type(self, party: Party, data: bytes) -> None:
        """A peer's keystrokes reach the process like the owner's."""
        if party.mode == "peer" and not self.paused:
            self._feed(data)

    async def end_by(self, party: Party) -> None:
        await self._terminate(f"limen: moderator {party.user} ended the session",
                              "ended by moderator")

    # -- output and the end ------------------------------------------------------------

    def output(self, data: bytes) -> None:
        for party in list(self.parties):
            party.write(data)

    def close(self, message: str) -> None:
        """The session is over: every party reads why and is let go."""
        if self.closed:
            return
        self.closed = True
        self._running.set()
        for party in list(self.parties):
            party.end(message)

    def tell_parties(self, line: str) -> None:
        for party in self.parties:
            party.say(line)

    def _announce(self, line: str, skip: Party | None = None) -> None:
        self._say_owner(line)
        for party in self.parties:
            if party is not skip:
                party.say(line)

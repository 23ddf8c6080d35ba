"""The session channels of a tunnel: each asks for one of Limen's own subsystems.

asyncssh wants a session object when the channel opens, before the agent has said
which subsystem it wants. This one waits for the name, lets the tunnel's hooks pick
the session that serves it (the heartbeat, the access feed), and hands every later
callback to that session. A name nobody serves is refused, and so is a shell or a
command: asyncssh refuses those for a session that does not accept them.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncssh

Session = asyncssh.SSHServerSession  # type: ignore[type-arg]


class SubsystemChannel(asyncssh.SSHServerSession):  # type: ignore[type-arg]
    def __init__(self, pick: Callable[[str], Session | None]) -> None:
        self._pick = pick
        self._chan: asyncssh.SSHServerChannel[str] | None = None
        self._chosen: Session | None = None

    def connection_made(self, chan: asyncssh.SSHServerChannel[str]) -> None:
        self._chan = chan

    def subsystem_requested(self, subsystem: str) -> bool:
        if self._chosen is not None or self._chan is None:
            return False  # one subsystem a channel
        chosen = self._pick(subsystem)
        if chosen is None:
            return False
        self._chosen = chosen
        chosen.connection_made(self._chan)
        return bool(chosen.subsystem_requested(subsystem))

    def session_started(self) -> None:
        if self._chosen is not None:
            self._chosen.session_started()

    def eof_received(self) -> bool:
        return True if self._chosen is None else bool(self._chosen.eof_received())

    def pause_writing(self) -> None:
        if self._chosen is not None:
            self._chosen.pause_writing()

    def resume_writing(self) -> None:
        if self._chosen is not None:
            self._chosen.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._chosen is not None:
            self._chosen.connection_lost(exc)

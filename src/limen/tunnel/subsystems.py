"""The session channels of a tunnel: each asks for one of Limen's own subsystems.

asyncssh wants a session object when the channel opens, before the agent has said
which subsystem it wants. This one waits for the name, lets the tunnel's hooks pick
the session that serves it (the heartbeat, the access feed), and hands every later
callback to that session. A name nobody serves is refused, and so is a shell or a
command: asyncssh refuses those for a session that does not accept them.

``NodeSubsystem`` is what the sessions that serve them share.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import ClassVar, TypeVar

import asyncssh

from limen.errors import ConnectionProblem, LimenError

log = logging.getLogger(__name__)

Session = asyncssh.SSHServerSession  # type: ignore[type-arg]
T = TypeVar("T")


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


class NodeSubsystem(asyncssh.SSHServerSession):  # type: ignore[type-arg]
    """One subsystem for the node the tunnel logged in as, served by a task (``serve``)
    that ends with the channel; ``done`` is told when the channel is gone. The agent
    sends nothing. Nothing may raise into asyncssh: that would end the whole tunnel."""

    subsystem: ClassVar[str]
    what: ClassVar[str]  # in words: "the heartbeat"

    def __init__(self, node_id: str, peer: str,
                 done: Callable[[NodeSubsystem], None]) -> None:
        self.node_id = node_id
        self.peer = peer
        self._done = done
        self._chan: asyncssh.SSHServerChannel[str] | None = None
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, chan: asyncssh.SSHServerChannel[str]) -> None:
        self._chan = chan

    def subsystem_requested(self, subsystem: str) -> bool:
        return subsystem == self.subsystem

    def eof_received(self) -> bool:
        return True  # the agent's end closes at once; keep the channel for the answer

    def session_started(self) -> None:
        assert self._chan is not None
        self._task = asyncio.get_running_loop().create_task(self.serve(self._chan))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._done(self)

    async def serve(self, chan: asyncssh.SSHServerChannel[str]) -> None:
        raise NotImplementedError

    async def ask(self, chan: asyncssh.SSHServerChannel[str], asking: Awaitable[T]) -> T | None:
        """The handler's answer; None once its refusal (a LimenError, or a failure of
        ours in words) has gone to the agent as the channel's last line, exit status 1."""
        try:
            return await asking
        except LimenError as exc:
            refusal = exc
        except Exception:  # noqa: BLE001 - a bug of ours: the agent hears a sentence
            log.exception("%s of node %s through its tunnel failed", self.what, self.node_id)
            refusal = ConnectionProblem(f"the proxy could not take {self.what}")
        with contextlib.suppress(Exception):  # ASCII JSON: the session's channel takes text
            chan.write(json.dumps(refusal.to_json()) + "\n")
            chan.exit(1)
        return None

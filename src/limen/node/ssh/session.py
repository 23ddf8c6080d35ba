"""One session: its identity and bookkeeping, and the things that end it.

A session is one SSH "session" channel (shell, command or subsystem). The context
knows nothing about channels or processes: the channel that runs the session gives it
a closer, and the context calls it when the certificate expires, the session has been
idle too long, or someone (a lock, an admin, node shutdown) calls ``terminate``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from limen.node.process.executor import ExitStatus, TermSize
from limen.node.ssh.identity import UserIdentity
from limen.node.ssh.policy import SessionPermit
from limen.node.ssh.sharing import SharedSession
from limen.timers import TimerHandle, Timers

log = logging.getLogger(__name__)

Closer = Callable[[str], Awaitable[None]]
Emit = Callable[[str, dict[str, Any]], Awaitable[None]]


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@dataclass
class SessionContext:
    identity: UserIdentity
    login: str
    server_id: str
    server_name: str
    kind: str  # "shell", "exec" or "subsystem"
    permit: SessionPermit
    timers: Timers
    emit: Emit  # audit events go out through the node (errors contained there)
    base_fields: dict[str, Any]  # the connection's common audit fields
    command: str | None = None
    subsystem: str | None = None
    term_size: TermSize | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started_at: datetime | None = None
    ended_at: datetime | None = None
    exit_status: ExitStatus | None = None
    end_reason: str | None = None
    tx_bytes: int = 0  # node -> user
    rx_bytes: int = 0  # user -> node
    last_activity: datetime | None = None
    shared: SharedSession | None = None  # an interactive session's other parties

    def __post_init__(self) -> None:
        self._closer: Closer | None = None
        self._timers: list[TimerHandle] = []
        self._background: set[asyncio.Future[None]] = set()
        self._terminating = False
        self._ended = asyncio.get_running_loop().create_future()

    # -- facts -----------------------------------------------------------------

    @property
    def interactive(self) -> bool:
        return self.term_size is not None

    @property
    def ended(self) -> bool:
        return self._ended.done()

    def fields(self, **extra: Any) -> dict[str, Any]:
        return {**self.base_fields, "sid": self.id, **extra}

    def touch(self, rx: int = 0, tx: int = 0) -> None:
        """Count traffic; any traffic means the session is not idle."""
        self.rx_bytes += rx
        self.tx_bytes += tx
        self.last_activity = self.timers.clock.now()

    # -- lifecycle ---------------------------------------------------------------

    async def start(self, closer: Closer) -> None:
        self._closer = closer
        self.started_at = self.last_activity = self.timers.clock.now()
        self._arm_timers()
        await self.emit("session.start", self.fields(
            session_kind=self.kind,
            interactive=self.interactive,
            terminal_size=str(self.term_size) if self.term_size else None,
            command=self.command,
            subsystem=self.subsystem,
            session_start=_iso(self.started_at),
            origin=self.identity.origin or None,
        ))

    async def finish(self, status: ExitStatus | None) -> None:
        """Record the end once the process is gone and its output delivered."""
        if self.ended:
            return
        for handle in self._timers:
            handle.cancel()
        self.exit_status = status
        self.ended_at = self.timers.clock.now()
        self._ended.set_result(None)
        await self.emit("session.data", self.fields(tx=self.tx_bytes, rx=self.rx_bytes))
        await self.emit("session.end", self.fields(
            session_kind=self.kind,
            interactive=self.interactive,
            session_start=_iso(self.started_at),
            session_stop=_iso(self.ended_at),
            exit_code=status.as_int if status else None,
            exit_signal=status.signal if status else None,
            reason=self.end_reason,
            participants=self._participants(),
        ))

    def _participants(self) -> list[str] | None:
        """Who took part: the owner, then everyone who joined (None: nobody joined)."""
        joined = self.shared.participants if self.shared is not None else []
        return [self.identity.user, *joined] if joined else None

    async def wait_ended(self) -> None:
        await asyncio.shield(self._ended)

    async def terminate(self, message: str, reason: str = "terminated") -> None:
        """End the session, telling the user why; returns once it has ended."""
        if not self._terminating and not self.ended and self._closer is not None:
            self._terminating = True
            self.end_reason = reason
            await self._closer(message)
        if self._closer is not None:
            await self.wait_ended()

    # -- timers ------------------------------------------------------------------

    def _arm_timers(self) -> None:
        when = self.permit.disconnect_at
        if when is not None:
            self._timers.append(self.timers.call_at(when, self._on_expiry))
        if self.permit.idle_timeout:
            self._arm_idle(self.timers.clock.now())

    def _arm_idle(self, since: datetime) -> None:
        assert self.permit.idle_timeout
        when = since + timedelta(seconds=self.permit.idle_timeout)
        self._timers.append(self.timers.call_at(when, self._on_idle_check))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)  # keep a reference until it is done
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Future[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("ending session %s failed", self.id, exc_info=task.exception())

    async def expire(self) -> None:
        """End the session because its time (the certificate's) is up."""
        when = self.permit.disconnect_at or self.identity.valid_before
        await self.terminate(
            f"limen: your certificate expired at {when:%Y-%m-%d %H:%M:%S} UTC; "
            "run limen login to get a new one",
            "certificate expired",
        )

    def _on_expiry(self) -> None:
        self._spawn(self.expire())

    def _on_idle_check(self) -> None:
        # Traffic only stamps last_activity; the timer re-arms from it lazily, so a
        # busy session costs nothing per byte.
        assert self.permit.idle_timeout and self.last_activity
        idle = (self.timers.clock.now() - self.last_activity).total_seconds()
        if idle < self.permit.idle_timeout:
            self._arm_idle(self.last_activity)
            return
        self._spawn(self.terminate(
            f"limen: session idle for {_duration(idle)}; disconnecting", "idle timeout"
        ))

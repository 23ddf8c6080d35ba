"""What a connection may do (the permit), who decides it (the policy) and who hears about it.

The cluster glue implements ``NodePolicy`` (roles, locks, labels) and ``NodeObserver``
(audit log, session tracking, recorder). ``CertPolicy`` and ``NullObserver`` let the node
run standalone: the certificate alone decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from limen.clock import Clock, RealClock
from limen.errors import AccessDenied
from limen.node.forwarding.destinations import Destination, destination_admitted
from limen.node.ssh.identity import UserIdentity
from limen.resources.session_policy import RequireSessionJoin

STANDALONE_JOIN = ("joining sessions needs the cluster's roles; this node runs standalone "
                   "and lets nobody join")

ACTIONS = frozenset({"session", "exec", "shell", "subsystem", "port_forward", "remote_forward",
                     "agent_forward"})


@dataclass
class SessionPermit:
    """What one connection may do; decided at each new channel."""

    port_forwarding: bool | list[str] = False  # False, True, or allowed "host:port" globs
    remote_forwarding: bool = False  # ssh -R: the node listens and forwards back
    forward_agent: bool = False
    file_copy: bool = True
    max_sessions: int = 0  # 0 = unlimited session channels per connection
    idle_timeout: float | None = None  # seconds without input or output
    disconnect_at: datetime | None = None  # end live sessions then (certificate expiry)
    record: str = "best_effort"


def destination_allowed(permit: SessionPermit, dest: Destination) -> bool:
    """Whether the permit allows a forward to ``dest`` (see destinations.py)."""
    return destination_admitted(permit.port_forwarding, dest)


def destination_of(detail: dict[str, Any]) -> Destination:
    """A port_forward action's destination as asked for (address: the first resolved)."""
    return destinations_of(detail)[0]


def destinations_of(detail: dict[str, Any]) -> list[Destination]:
    """A port_forward action's destination, once per address its host resolved to."""
    host, port = str(detail.get("host", "")), int(detail.get("port", 0))
    addresses = [str(a) for a in detail.get("addresses") or []] or [host]
    return [Destination(host, port, address) for address in addresses]


class NodePolicy(Protocol):
    async def authorize(
        self, identity: UserIdentity, login: str, action: str, detail: dict[str, Any]
    ) -> SessionPermit:
        """Return the permit for ``action`` or raise ``AccessDenied("a clear sentence")``.

        ``action`` is one of ``ACTIONS``; ``detail`` carries what the action is about
        (command, subsystem, host and port, session id).
        """
        ...

    async def check_join(self, joiner: UserIdentity, owner: str, mode: str) -> list[str]:
        """The joiner's role names when their roles let them join ``owner``'s sessions in
        ``mode``; else AccessDenied with the reason (see limen.rbac.joining)."""
        ...

    async def moderation(self, owner: UserIdentity) -> list[RequireSessionJoin]:
        """The owner's require_session_join policies for an interactive session."""
        ...


class NodeObserver(Protocol):
    async def on_event(self, name: str, fields: dict[str, Any]) -> None:
        """Audit events: auth, session.start, session.end, exec, port, sftp, scp, resize,
        session.data, client.disconnect. Awaited: may do I/O."""
        ...

    async def open_recording(self, session_id: str, fields: dict[str, Any]) -> str | None:
        """Start recording a session before its process starts (``fields`` as in its
        session.start event). Returns None, or why the session cannot be recorded."""
        ...

    async def on_session_output(self, session_id: str, data: bytes, stream: str) -> None:
        """Every chunk a session sends to the user (stream: stdout, stderr, or transfer:
        a file-transfer protocol's bytes, to count rather than store). Keep it cheap."""
        ...

    async def on_session_state(self, session_id: str, state: str) -> None:
        """A live session's state changed: active, or waiting for moderators, or paused
        (require_session_join); what limen sessions ls shows."""
        ...


class NullObserver:
    async def on_event(self, name: str, fields: dict[str, Any]) -> None:
        return None

    async def open_recording(self, session_id: str, fields: dict[str, Any]) -> str | None:
        return None  # nothing to record with: no recording was promised

    async def on_session_output(self, session_id: str, data: bytes, stream: str) -> None:
        return None

    async def on_session_state(self, session_id: str, state: str) -> None:
        return None


class CertPolicy:
    """Allow exactly what the certificate allows; used when the node runs standalone."""

    def __init__(
        self,
        *,
        disconnect_expired_cert: bool = True,
        idle_timeout: float | None = None,
        max_sessions: int = 0,
        file_copy: bool = True,
        clock: Clock | None = None,
    ) -> None:
        self._disconnect_expired_cert = disconnect_expired_cert
        self._idle_timeout = idle_timeout
        self._max_sessions = max_sessions
        self._file_copy = file_copy
        self._clock = clock or RealClock()

    async def authorize(
        self, identity: UserIdentity, login: str, action: str, detail: dict[str, Any]
    ) -> SessionPermit:
        if action not in ACTIONS:
            raise AccessDenied(f"unknown action {action!r}")
        if login not in identity.principals:
            raise AccessDenied(f"your certificate does not allow login as {login!r}")
        if self._clock.now() >= identity.valid_before:
            raise AccessDenied("your certificate has expired; run limen login")
        permit = self.permit_for(identity)
        if action == "port_forward":
            dest = destination_of(detail)
            if not any(destination_allowed(permit, d) for d in destinations_of(detail)):
                raise AccessDenied(
                    f"port forwarding to {dest.host}:{dest.port} is not allowed for you"
                )
        if action == "remote_forward" and not permit.remote_forwarding:
            raise AccessDenied("remote port forwarding is not allowed for you")
        if action == "agent_forward" and not permit.forward_agent:
            raise AccessDenied("agent forwarding is not allowed for you")
        return permit

    async def check_join(self, joiner: UserIdentity, owner: str, mode: str) -> list[str]:
        raise AccessDenied(STANDALONE_JOIN)

    async def moderation(self, owner: UserIdentity) -> list[RequireSessionJoin]:
        return []

    def permit_for(self, identity: UserIdentity) -> SessionPermit:
        return SessionPermit(
            port_forwarding=identity.permit_port_forwarding,
            remote_forwarding=identity.permit_port_forwarding,
            forward_agent=identity.permit_agent_forwarding,
            file_copy=self._file_copy,
            max_sessions=self._max_sessions,
            idle_timeout=self._idle_timeout,
            disconnect_at=identity.valid_before if self._disconnect_expired_cert else None,
        )

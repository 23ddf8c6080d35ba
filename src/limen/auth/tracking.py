"""What nodes report: audit events (node_reports.py) and live session trackers.

A node's sessions are listed (``limen sessions ls``) from its own reports: the
session.start the auth service wrote lists the session, its session.end takes it off.
One request each, where a tracker of its own would cost the node a second; and what is
listed is what the log says, the user and login as the start's certificate proved them.
The node still sends a tracker when its parties or state change, and with its heartbeat.
"""

from __future__ import annotations

import contextlib
from typing import Any

from limen.audit import events as types
from limen.audit.bindings import SessionBindings
from limen.auth.context import AuthContext
from limen.auth.identity import Identity
from limen.auth.node_reports import NodeReports
from limen.errors import AccessDenied, NotFound
from limen.resources import Session


class Tracking:
    def __init__(self, ctx: AuthContext, bindings: SessionBindings) -> None:
        self.ctx = ctx
        self.bindings = bindings
        self.reports = NodeReports(ctx, bindings)

    async def report_event(self, identity: Identity, name: str, fields: dict[str, Any],
                           server: dict[str, Any] | None = None) -> None:
        """A node's event, stamped with what the auth service knows (see node_reports);
        ``server`` as ``reports.server_of`` gave it, for a batch of one node's events."""
        written = await self.reports.report(identity, name, fields, server)
        if identity.builtin == "node" and not written.get("duplicate"):
            await self._follow(identity.user, name, written)

    async def _follow(self, node_id: str, name: str, record: dict[str, Any]) -> None:
        """List the session its start was written for; end it with its end."""
        sid = record.get("sid")
        if not isinstance(sid, str) or not sid:
            return
        if name == types.SESSION_START.name:
            await self._keep(_tracker(node_id, sid, record))
        elif name == types.SESSION_END.name:
            with contextlib.suppress(NotFound):
                await self.ctx.stores.sessions.delete(sid)

    async def upsert_session(self, identity: Identity, session: Session) -> Session:
        if identity.builtin == "node":
            if session.spec.node_id != identity.user:
                raise AccessDenied("a node may only report its own sessions")
            # The tracker says who as the session's start proved it, not as the node says.
            binding = await self.bindings.owned(session.name, identity.user)
            if binding is not None and binding.user is not None:
                owner, login = binding.user, binding.login or session.spec.login
            else:  # no start backed it (or none was written yet): only the node's word
                owner, login = claimed(session.spec.user), session.spec.login
            session.spec.user, session.spec.login = owner, login
            # The owner as proven; then whoever the node says joined (the node judged
            # their certificates, and may only speak of its own sessions).
            joined = [p for p in session.spec.parties[1:] if p != owner]
            session.spec.parties = [owner, *joined]
        return await self._keep(session)

    async def _keep(self, session: Session) -> Session:
        """Store a tracker, fresh for session_ttl (heartbeats renew it)."""
        session.metadata.expires = self.ctx.clock.now() + self.ctx.settings.session_ttl
        return await self.ctx.stores.sessions.upsert(session)

    async def end_session(self, identity: Identity, session_id: str) -> None:
        if identity.builtin == "node":
            await self.bindings.owned(session_id, identity.user)
        with contextlib.suppress(NotFound):
            await self.ctx.stores.sessions.delete(session_id)

    async def list_sessions(self) -> list[Session]:
        return await self.ctx.stores.sessions.list()


def _tracker(node_id: str, sid: str, record: dict[str, Any]) -> Session:
    """A session's tracker from its written session.start: the user and login are the
    facts the log holds, or the node's claims where the start was not backed."""
    return Session.from_start(
        sid, record, user=record.get("user") or claimed(record.get("claimed_user") or ""),
        login=record.get("login") or record.get("claimed_login") or "", node_id=node_id,
        node_name=record.get("server_hostname") or node_id, started=record["time"])


def claimed(user: str) -> str:
    """A name only a node's word backs, marked as `limen audit search` marks it: never
    the same text as the user's own name, so the session is not listed as theirs."""
    return f"{user} (claimed)"

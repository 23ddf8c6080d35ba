"""What nodes report: audit events (node_reports.py) and live session trackers.

A node's sessions are listed (``limen sessions ls``) from its own reports: the
session.start the auth service wrote lists the session, its session.end takes it off.
One request each, where a tracker of its own would cost the node a second; and what is
listed is what the log says, the user and login as the start's certificate proved them.
The node still sends a tracker when its parties or state change, and with its heartbeat.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from limen.audit import events as types
from limen.audit.bindings import SessionBindings
from limen.auth.context import AuthContext
from limen.auth.identity import Identity
from limen.auth.node_reports import NodeReports
from limen.errors import AccessDenied, LimenError, NotFound
from limen.resources import Session


class Tracking:
    def __init__(self, ctx: AuthContext, bindings: SessionBindings) -> None:
        self.ctx = ctx
        self.bindings = bindings
        self.reports = NodeReports(ctx, bindings)

    async def report_event(self, identity: Identity, name: str, fields: dict[str, Any]) -> None:
        """A node's event, stamped with what the auth service knows (see node_reports)."""
        (answer,) = await self.report_events(identity, [(name, fields)])
        if answer is not None:
            raise answer

    async def report_events(self, identity: Identity, events: Sequence[tuple[str, dict[str, Any]]]
                            ) -> list[LimenError | None]:
        """Several of one node's events, written together; each one's refusal, or None
        where it was written."""
        answers = await self.reports.report_many(identity, events)
        if identity.builtin == "node":
            await self._follow(identity.user, [
                (name, answer) for (name, _), answer in zip(events, answers, strict=True)
                if not isinstance(answer, LimenError) and not answer.get("duplicate")])
        return [answer if isinstance(answer, LimenError) else None for answer in answers]

    async def _follow(self, node_id: str, written: list[tuple[str, dict[str, Any]]]) -> None:
        """List the sessions whose starts were written; end those whose ends were: one
        storage transaction for each (a busy node's batch holds many of either). A session
        that starts and ends in one batch (a spool replayed after an outage holds many) is
        never listed, and its end removes only a tracker the node itself sent, which the
        storage finds with one read: such a session costs no write."""
        started: list[Session] = []
        ended: list[str] = []
        for name, record in written:
            sid = record.get("sid")
            if not isinstance(sid, str) or not sid:
                continue
            if name == types.SESSION_START.name:
                started.append(_tracker(node_id, sid, record))
            elif name == types.SESSION_END.name:
                ended.append(sid)
        over = set(ended)
        started = [session for session in started if session.name not in over]
        if started:
            await self._keep_many(started)
        if ended:
            await self.ctx.stores.sessions.delete_many(ended)

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
        return (await self._keep_many([session]))[0]

    async def _keep_many(self, sessions: list[Session]) -> list[Session]:
        expires = self.ctx.clock.now() + self.ctx.settings.session_ttl
        for session in sessions:
            session.metadata.expires = expires
        # One tracker per session: a batch may hold two starts of one session (with two
        # uids), and one transaction cannot store a key twice.
        unique = list({session.name: session for session in sessions}.values())
        return await self.ctx.stores.sessions.upsert_many(unique)

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

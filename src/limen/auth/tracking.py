"""What nodes report: audit events (node_reports.py) and live session trackers."""

from __future__ import annotations

import contextlib
from typing import Any

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

    async def report_event(self, identity: Identity, name: str, fields: dict[str, Any]) -> None:
        """A node's event, stamped with what the auth service knows (see node_reports)."""
        await self.reports.report(identity, name, fields)

    async def upsert_session(self, identity: Identity, session: Session) -> Session:
        if identity.builtin == "node":
            if session.spec.node_id != identity.user:
                raise AccessDenied("a node may only report its own sessions")
            # The tracker says who as the session's start proved it, not as the node says.
            binding = await self.bindings.owned(session.name, identity.user)
            if binding is not None and binding.user is not None:
                session.spec.user = binding.user
                session.spec.login = binding.login or session.spec.login
                # The owner as proven; then whoever the node says joined (the node
                # judged their certificates, and may only speak of its own sessions).
                joined = [p for p in session.spec.parties[1:] if p != binding.user]
                session.spec.parties = [binding.user, *joined]
        session.metadata.expires = self.ctx.clock.now() + self.ctx.settings.session_ttl
        return await self.ctx.stores.sessions.upsert(session)

    async def end_session(self, identity: Identity, session_id: str) -> None:
        if identity.builtin == "node":
            await self.bindings.owned(session_id, identity.user)
        with contextlib.suppress(NotFound):
            await self.ctx.stores.sessions.delete(session_id)

    async def list_sessions(self) -> list[Session]:
        return await self.ctx.stores.sessions.list()



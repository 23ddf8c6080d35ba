"""What nodes report: audit events and live session trackers."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from limen.audit import events
from limen.audit.chain import parse_time
from limen.auth.context import AuthContext
from limen.auth.identity import Identity
from limen.errors import AccessDenied, BadParameter, NotFound
from limen.resources import Session

# Fields a node may not set itself: they come from the server and the node's identity.
_RESERVED = {"event", "code", "uid", "time", "cluster_name"}


class Tracking:
    def __init__(self, ctx: AuthContext) -> None:
        self.ctx = ctx

    async def report_event(self, identity: Identity, name: str, fields: dict[str, Any]) -> None:
        failed = fields.get("success") is False or fields.get("allowed") is False
        event = events.reported(name, failed)
        if event is None:
            raise BadParameter(f"unknown event {name!r}")
        clean = {k: v for k, v in fields.items() if k not in _RESERVED}
        clean.setdefault("server_id", identity.user)
        # The node names each event (a resend after a lost answer is then written once)
        # and, for an event it kept while the auth service was away, when it happened.
        uid, when = _reported_uid(fields.get("uid")), _reported_time(fields.get("time"))
        await self.ctx.audit.record(event, clean, uid=uid, time_ns=when)

    async def upsert_session(self, identity: Identity, session: Session) -> Session:
        if session.spec.node_id != identity.user and identity.builtin == "node":
            raise AccessDenied("a node may only report its own sessions")
        session.metadata.expires = self.ctx.clock.now() + self.ctx.settings.session_ttl
        return await self.ctx.stores.sessions.upsert(session)

    async def end_session(self, identity: Identity, session_id: str) -> None:
        with contextlib.suppress(NotFound):
            await self.ctx.stores.sessions.delete(session_id)

    async def list_sessions(self) -> list[Session]:
        return await self.ctx.stores.sessions.list()


def _reported_uid(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise BadParameter("an event's uid must be a UUID") from None


def _reported_time(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return parse_time(str(value))
    except ValueError:
        raise BadParameter("an event's time must be RFC 3339") from None

"""The audit page (search by time range, type, user, node and session; details; pages)
and the recordings pages (list, text search, the player and the recording it plays).

The facade checks the rule on ``event`` (list) and on ``recording`` (list, read), as for
``limen audit search`` and ``limen play``; playing a recording is audited there.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response, StreamingResponse

from limen.audit import events as types
from limen.audit.log import now_ns
from limen.audit.recordings import meta_json
from limen.audit.search import decode_cursor, parse_when
from limen.audit.store import EventQuery
from limen.errors import BadParameter
from limen.proxy.webui.context import WebUIState, find_visitor, render

PAGE = 50
# Shown in an event's summary column, in this order, when the event has them.
SUMMARY_FIELDS = ("login", "server_hostname", "command", "size", "reason", "error", "name",
                  "path", "action", "addr", "addr.remote")
EVENT_NAMES = sorted({t.name for t in types.ALL})


@dataclass(frozen=True)
class EventRow:
    record: dict[str, Any]

    @property
    def summary(self) -> str:
        parts = []
        for key in SUMMARY_FIELDS:
            value = self.record.get(key)
            if value not in (None, "", [], {}):
                parts.append(f"{key}={value}")
        return " ".join(parts)[:300]

    @property
    def user(self) -> str:
        user = self.record.get("user")
        claimed = self.record.get("claimed_user")
        return user or (f"{claimed} (claimed)" if claimed else "")

    @property
    def details(self) -> str:
        return json.dumps(self.record, indent=2, sort_keys=True)

    @property
    def session(self) -> str:
        return str(self.record.get("sid") or "")

    @property
    def failed(self) -> bool:
        return str(self.record.get("code", "")).endswith(("W", "E"))


def add_routes(app: FastAPI, state: WebUIState) -> None:
    @app.get("/audit")
    async def audit(request: Request, since: str = "24h", until: str = "",
                    type: list[str] = Query(default=[]),  # noqa: A002, B008
                    user: str = "", node: str = "", session: str = "",
                    cursor: str = "") -> Response:
        visitor = await find_visitor(state, request)
        now = now_ns(visitor.api.clock)
        chosen = [t for t in type if t]
        params = {"since": since, "until": until, "user": user, "node": node,
                  "session": session}
        found: list[dict[str, Any]] = []
        following, error = None, ""
        try:  # a mistyped time is said on the page, beside the form to correct it
            query = EventQuery(
                since_ns=parse_when(since, now) if since.strip() else None,
                until_ns=parse_when(until, now) if until.strip() else None,
                types=tuple(chosen), user=user.strip() or None, node=node.strip() or None,
                session=session.strip() or None, limit=PAGE,
                cursor=decode_cursor(cursor or None),
            )
            found, following = await visitor.api.search_events(query)
        except BadParameter as exc:
            error = exc.message
        return render(state, request, "audit.html", visitor=visitor, title="Audit log",
                      status=400 if error else 200, error=error,
                      rows=[EventRow(r) for r in found], following=following,
                      params=params, chosen=chosen, event_names=EVENT_NAMES,
                      first_page=not cursor,
                      may_read_recordings=visitor.may("recording", "read"))

    @app.get("/recordings")
    async def recordings(request: Request, q: str = "") -> Response:
        visitor = await find_visitor(state, request)
        text = q.strip()
        found = (await visitor.api.search_recordings(text, 200) if text
                 else await visitor.api.list_recordings(200, None))
        return render(state, request, "recordings.html", visitor=visitor, title="Recordings",
                      rows=[meta_json(m) for m in found], q=text)

    @app.get("/recordings/{session_id}")
    async def player(request: Request, session_id: str, q: str = "") -> Response:
        visitor = await find_visitor(state, request)
        meta = await visitor.api.get_recording(session_id)
        return render(state, request, "player.html", visitor=visitor, terminal=True,
                      title=f"Recording {session_id}", meta=meta_json(meta), q=q)

    @app.get("/recordings/{session_id}/cast")
    async def cast(request: Request, session_id: str) -> Response:
        visitor = await find_visitor(state, request)
        meta, chunks = await visitor.api.play_recording(session_id)

        async def body() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                yield chunk

        return StreamingResponse(body(), media_type="application/x-asciicast", headers={
            "cache-control": "no-store",
            "x-limen-complete": "true" if meta.complete else "false",
        })

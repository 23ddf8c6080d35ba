"""HTTPS API routes for the audit log (search, verify) and session recordings.

People need the rule on ``event`` (search, verify) or ``recording`` (list, play, search);
nodes send recordings with their own identity.
"""

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import StreamingResponse

from limen.audit.log import now_ns
from limen.audit.recordings import MAX_APPEND, meta_json
from limen.audit.search import decode_cursor, parse_when
from limen.audit.store import EventQuery
from limen.auth.identity import Identity
from limen.auth.server import AuthServer
from limen.errors import BadParameter


def add_routes(app: FastAPI, auth: AuthServer, caller_dep: Any) -> None:
    Caller = Annotated[Identity, Depends(caller_dep)]

    def when(text: str | None) -> int | None:
        return parse_when(text, now_ns(auth.ctx.clock)) if text else None

    @app.get("/v1/audit/events")
    async def search_events(
        caller: Caller,
        since: str | None = None,
        until: str | None = None,
        type: Annotated[list[str] | None, Query()] = None,  # noqa: A002 - the flag's name
        user: str | None = None,
        node: str | None = None,
        session: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        query = EventQuery(
            since_ns=when(since), until_ns=when(until), types=tuple(type or ()), user=user,
            node=node, session=session, limit=limit, cursor=decode_cursor(cursor),
        )
        found, following = await auth.audit_search.search(caller, query)
        return {"events": found, "next": following}

    @app.get("/v1/audit/verify")
    async def verify(caller: Caller, since: str | None = None) -> dict[str, Any]:
        report = await auth.audit_search.verify(caller, when(since))
        return report.to_json()

    @app.get("/v1/recordings")
    async def list_recordings(caller: Caller, limit: int = 100,
                              since: str | None = None) -> list[dict[str, Any]]:
        return [meta_json(m) for m in await auth.recordings.list(caller, limit, when(since))]

    @app.get("/v1/recordings/search")
    async def search_recordings(caller: Caller, text: str,
                                limit: int = 100) -> list[dict[str, Any]]:
        return [meta_json(m) for m in await auth.recordings.search(caller, text, limit)]

    @app.get("/v1/recordings/{session_id}")
    async def get_recording(session_id: str, caller: Caller) -> dict[str, Any]:
        return meta_json(await auth.recordings.get(caller, session_id))

    @app.get("/v1/recordings/{session_id}/cast")
    async def play_recording(session_id: str, caller: Caller) -> StreamingResponse:
        meta, chunks = await auth.recordings.open(caller, session_id)

        async def body() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                yield chunk

        return StreamingResponse(body(), media_type="application/x-asciicast", headers={
            "x-limen-complete": "true" if meta.complete else "false",
        })

    @app.put("/v1/recordings/{session_id}")
    async def update_recording(session_id: str, request: Request,
                               caller: Caller) -> dict[str, Any]:
        body = await request.json()
        if not isinstance(body, dict):
            raise BadParameter("send the recording's metadata as a JSON object")
        return await auth.recordings.update(caller, session_id, body)

    @app.post("/v1/recordings/{session_id}/data")
    async def append_recording(session_id: str, offset: int, request: Request,
                               caller: Caller) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_APPEND:
            raise BadParameter(f"send at most {MAX_APPEND} bytes of a recording at a time")
        data = await request.body()
        size = await auth.recordings.append(caller, session_id, offset, data)
        return {"size": size}

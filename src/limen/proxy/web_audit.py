"""HTTPS API routes for the audit log (search, verify) and session recordings.

People need the rule on ``event`` (search, verify) or ``recording`` (list, play, search);
nodes send recordings with their own identity. The checks are the facade's.
"""

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, model_validator

from limen.audit.log import now_ns
from limen.audit.recordings import MAX_APPEND, meta_json
from limen.audit.search import decode_cursor, parse_when
from limen.audit.store import EventQuery
from limen.auth.facade import AuthFacade
from limen.errors import BadParameter
from limen.proxy.web_errors import SIGNED_IN, errors

# Nanosecond times, sizes and offsets are stored as signed 64-bit integers.
INT64 = 2**63 - 1
# A recording is named by its session's id, a UUID (the service says so if it is not).
SessionId = Annotated[str, Path(json_schema_extra={"format": "uuid"})]


class RecordingUpdate(BaseModel):
    """A recording's metadata as its node sends it (first, and once it has ended)."""

    user: str = Field(default="", max_length=256)
    login: str = Field(default="", max_length=256)
    node: str = Field(default="", max_length=256)
    node_id: str = Field(default="", max_length=256)
    kind: str = Field(default="", max_length=32)
    command: str = Field(default="", max_length=65536)
    start_ns: int = Field(default=0, ge=0, le=INT64)
    end_ns: int | None = Field(default=None, ge=0, le=INT64)
    size: int | None = Field(default=None, ge=0, le=INT64)
    interrupted: bool = False
    extra: dict[str, Any] = Field(default_factory=dict)
    # The whole cast as text, for a recording sent in one request once it ended.
    data: str | None = Field(default=None, max_length=MAX_APPEND)


# Ended recordings a node may send whole in one request (POST /v1/recordings/batch).
MAX_WHOLE_RECORDINGS = 64


class WholeRecording(RecordingUpdate):
    """An ended session's recording, metadata and cast together."""

    session_id: str = Field(max_length=64, json_schema_extra={"format": "uuid"})
    data: str = Field(max_length=MAX_APPEND)


class WholeRecordings(BaseModel):
    recordings: list[WholeRecording] = Field(min_length=1, max_length=MAX_WHOLE_RECORDINGS)

    @model_validator(mode="after")
    def _bounded(self) -> "WholeRecordings":
        # One request holds what one append may: the casts together, not each.
        if sum(len(r.data) for r in self.recordings) > MAX_APPEND:
            raise ValueError(f"send at most {MAX_APPEND} bytes of recordings at a time")
        return self


def add_routes(app: FastAPI, Caller: Any) -> None:  # noqa: N803 - a type alias
    def when(api: AuthFacade, text: str | None) -> int | None:
        return parse_when(text, now_ns(api.clock)) if text else None

    @app.get("/v1/audit/events", responses=errors(400, *SIGNED_IN))
    async def search_events(
        api: Caller,
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
            since_ns=when(api, since), until_ns=when(api, until), types=tuple(type or ()),
            user=user, node=node, session=session, limit=limit, cursor=decode_cursor(cursor),
        )
        found, following = await api.search_events(query)
        return {"events": found, "next": following}

    @app.get("/v1/audit/verify", responses=errors(400, *SIGNED_IN))
    async def verify(api: Caller, since: str | None = None) -> dict[str, Any]:
        return (await api.verify_audit(when(api, since))).to_json()

    @app.get("/v1/recordings", responses=errors(400, *SIGNED_IN))
    async def list_recordings(api: Caller, limit: int = 100,
                              since: str | None = None) -> list[dict[str, Any]]:
        return [meta_json(m) for m in await api.list_recordings(limit, when(api, since))]

    @app.get("/v1/recordings/search", responses=errors(400, *SIGNED_IN))
    async def search_recordings(api: Caller, text: str,
                                limit: int = 100) -> list[dict[str, Any]]:
        return [meta_json(m) for m in await api.search_recordings(text, limit)]

    @app.get("/v1/recordings/{session_id}", responses=errors(400, 404, *SIGNED_IN))
    async def get_recording(session_id: SessionId, api: Caller) -> dict[str, Any]:
        return meta_json(await api.get_recording(session_id))

    @app.get(
        "/v1/recordings/{session_id}/cast",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"application/x-asciicast": {"schema": {"type": "string"}}},
                  "description": "The recording as asciicast v2."},
            **errors(400, 404, *SIGNED_IN),
        },
    )
    async def play_recording(session_id: SessionId, api: Caller) -> StreamingResponse:
        meta, chunks = await api.play_recording(session_id)

        async def body() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                yield chunk

        return StreamingResponse(body(), media_type="application/x-asciicast", headers={
            "x-limen-complete": "true" if meta.complete else "false",
        })

    @app.put("/v1/recordings/{session_id}", responses=errors(400, *SIGNED_IN))
    async def update_recording(session_id: SessionId, body: RecordingUpdate,
                               api: Caller) -> dict[str, Any]:
        return await api.update_recording(session_id, body.model_dump())

    @app.post("/v1/recordings/batch", responses=errors(400, *SIGNED_IN))
    async def update_recordings(body: WholeRecordings, api: Caller) -> dict[str, Any]:
        """Ended recordings, each whole, as PUT /v1/recordings/{session_id} takes it;
        ``results`` says, recording by recording, what that call would have answered
        (its answer, or its error)."""
        answers = await api.update_recordings(
            [(r.session_id, r.model_dump(exclude={"session_id"})) for r in body.recordings])
        return {"results": [a if isinstance(a, dict) else a.to_json() for a in answers]}

    @app.post(
        "/v1/recordings/{session_id}/data",
        responses=errors(400, *SIGNED_IN),
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        }}},
    )
    async def append_recording(session_id: SessionId, request: Request, api: Caller,
                               offset: Annotated[int, Query(ge=0, le=INT64)]) -> dict[str, Any]:
        too_much = BadParameter(f"send at most {MAX_APPEND} bytes of a recording at a time")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_APPEND:
            raise too_much
        data = bytearray()  # a chunked body declares no length: count as it arrives
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_APPEND:
                raise too_much
        return {"size": await api.append_recording(session_id, offset, bytes(data))}

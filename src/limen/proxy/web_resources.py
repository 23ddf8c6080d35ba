"""HTTPS API routes for generic resources (get/create/rm/edit) and locks."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import Body, FastAPI
from pydantic import BaseModel, Field

from limen.auth.resources import public
from limen.durations import parse_duration
from limen.proxy.web_errors import SIGNED_IN, errors


class LockCreate(BaseModel):
    target: dict[str, str]
    message: str = Field(default="", max_length=1000)
    ttl: str | None = None
    expires: datetime | None = None


def add_routes(app: FastAPI, Caller: Any) -> None:  # noqa: N803 - a type alias
    @app.get("/v1/resources/{kind}", responses=errors(400, *SIGNED_IN))
    async def list_resources(kind: str, api: Caller) -> list[dict[str, Any]]:
        return await api.get_resources(kind, None)

    @app.get("/v1/resources/{kind}/{name}", responses=errors(400, 404, *SIGNED_IN))
    async def get_resource(kind: str, name: str, api: Caller) -> dict[str, Any]:
        return (await api.get_resources(kind, name))[0]

    @app.put("/v1/resources", responses=errors(400, 404, 409, *SIGNED_IN))
    async def put_resource(
        api: Caller, document: Annotated[dict[str, Any], Body()], force: bool = False
    ) -> dict[str, Any]:
        return await api.put_resource(document, force)

    @app.delete("/v1/resources/{kind}/{name}", responses=errors(400, 404, *SIGNED_IN))
    async def delete_resource(kind: str, name: str, api: Caller) -> dict[str, Any]:
        await api.delete_resource(kind, name)
        return {"deleted": f"{kind}/{name}"}

    @app.post("/v1/locks", responses=errors(400, 409, *SIGNED_IN))
    async def create_lock(body: LockCreate, api: Caller) -> dict[str, Any]:
        ttl = parse_duration(body.ttl) if body.ttl else None
        lock = await api.create_lock(body.target, body.message, ttl, body.expires)
        return public(lock)

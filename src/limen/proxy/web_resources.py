"""HTTPS API routes for generic resources (get/create/rm/edit) and locks."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI
from pydantic import BaseModel, Field

from limen.auth.identity import Identity
from limen.auth.resources import ResourceService, public
from limen.auth.server import AuthServer
from limen.durations import parse_duration


class LockCreate(BaseModel):
    target: dict[str, str]
    message: str = Field(default="", max_length=1000)
    ttl: str | None = None
    expires: datetime | None = None


def add_routes(app: FastAPI, auth: AuthServer, caller_dep: Any) -> None:
    Caller = Annotated[Identity, Depends(caller_dep)]
    resources = ResourceService(auth)

    @app.get("/v1/resources/{kind}")
    async def list_resources(kind: str, caller: Caller) -> list[dict[str, Any]]:
        return await resources.get(caller, kind, None)

    @app.get("/v1/resources/{kind}/{name}")
    async def get_resource(kind: str, name: str, caller: Caller) -> dict[str, Any]:
        return (await resources.get(caller, kind, name))[0]

    @app.put("/v1/resources")
    async def put_resource(
        caller: Caller, document: Annotated[dict[str, Any], Body()], force: bool = False
    ) -> dict[str, Any]:
        return await resources.put(caller, document, force)

    @app.delete("/v1/resources/{kind}/{name}")
    async def delete_resource(kind: str, name: str, caller: Caller) -> dict[str, Any]:
        await resources.delete(caller, kind, name)
        return {"deleted": f"{kind}/{name}"}

    @app.post("/v1/locks")
    async def create_lock(body: LockCreate, caller: Caller) -> dict[str, Any]:
        await auth.authorize(caller, "lock", "create")
        ttl = parse_duration(body.ttl) if body.ttl else None
        lock = await auth.locks.create(caller, body.target, body.message, ttl, body.expires)
        return public(lock)

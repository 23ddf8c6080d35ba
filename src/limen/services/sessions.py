"""API sessions: a bearer token per login, stored only as its SHA-256, expiring with the cert."""

from __future__ import annotations

import secrets
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from limen.backend.base import Backend
from limen.resources.base import Resource
from limen.resources.token import token_hash
from limen.services.store import ResourceStore


class APISessionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str
    # "admin" for the data dir's own identity, "" for people.
    builtin: str = ""
    roles: list[str] = Field(default_factory=list)


class APISession(Resource):
    KIND = "api_session"
    spec: APISessionSpec


class APISessionStore(ResourceStore[APISession]):
    def __init__(self, backend: Backend) -> None:
        super().__init__(backend, APISession, "/api_sessions")

    async def issue(self, user: str, expires: datetime | None, builtin: str = "") -> str:
        token = secrets.token_hex(32)
        await self.upsert(self.for_token(token, user, expires, builtin))
        return token

    @staticmethod
    def for_token(token: str, user: str, expires: datetime | None, builtin: str = "") -> APISession:
        return APISession(
            metadata={"name": token_hash(token), "expires": expires},
            spec=APISessionSpec(user=user, builtin=builtin),
        )

    async def lookup(self, token: str) -> APISession:
        return await self.get(token_hash(token))

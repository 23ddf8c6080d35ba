"""A live SSH session as the cluster tracks it (limen sessions ls)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from limen.resources.base import Resource


class SessionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str
    login: str
    node_id: str
    node_name: str
    interactive: bool = False
    command: str = ""
    started: datetime
    remote_addr: str = ""
    parties: list[str] = Field(default_factory=list)
    state: str = "active"


class Session(Resource):
    """metadata.name is the session id (a UUID); metadata.expires keeps it fresh."""

    KIND = "session"
    spec: SessionSpec

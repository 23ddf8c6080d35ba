"""A live SSH session as the cluster tracks it (limen sessions ls)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

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

    @classmethod
    def from_start(cls, sid: str, fields: dict[str, Any], *, user: str, login: str,
                   node_id: str, node_name: str, started: str | datetime) -> Session:
        """A session's tracker from the fields of its session.start event; who and where
        come from the caller, which knows what to believe of them."""
        return cls.model_validate({
            "metadata": {"name": sid},
            "spec": {
                "user": user,
                "login": login,
                "node_id": node_id,
                "node_name": node_name,
                "interactive": bool(fields.get("interactive")),
                "command": str(fields.get("command") or fields.get("subsystem") or ""),
                "started": fields.get("session_start") or started,
                "remote_addr": str(fields.get("addr.remote") or ""),
                "parties": [user],
            },
        })

"""Roles, shaped like Teleport's role v7: allow, deny and options."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from limen.resources.base import Resource

RESOURCE_KINDS = (
    "user",
    "role",
    "token",
    "node",
    "session",
    "event",
    "recording",
    "lock",
    "cert_authority",
)
VERBS = ("list", "read", "create", "update", "delete")


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resources: list[str]
    verbs: list[str]

    @field_validator("resources")
    @classmethod
    def _known_resources(cls, value: list[str]) -> list[str]:
        for item in value:
            if item != "*" and item not in RESOURCE_KINDS:
                raise ValueError(f"unknown resource {item!r}; known: {', '.join(RESOURCE_KINDS)}")
        return value

    @field_validator("verbs")
    @classmethod
    def _known_verbs(cls, value: list[str]) -> list[str]:
        for item in value:
            if item != "*" and item not in VERBS:
                raise ValueError(f"unknown verb {item!r}; known: {', '.join(VERBS)}")
        return value


class RoleConditions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    logins: list[str] = Field(default_factory=list)
    node_labels: dict[str, str | list[str]] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)


class RoleOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_session_ttl: str = "30h"
    forward_agent: bool = False
    port_forwarding: bool | list[str] = False
    ssh_file_copy: bool = True
    client_idle_timeout: str | None = None
    disconnect_expired_cert: bool = False
    max_sessions: int | None = None
    record_session: Literal["best_effort", "strict"] = "best_effort"
    require_session_mfa: Literal[False, "off"] = False


class RoleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allow: RoleConditions = Field(default_factory=RoleConditions)
    deny: RoleConditions = Field(default_factory=RoleConditions)
    options: RoleOptions = Field(default_factory=RoleOptions)


class Role(Resource):
    KIND = "role"
    version: str = "v7"
    spec: RoleSpec = Field(default_factory=RoleSpec)

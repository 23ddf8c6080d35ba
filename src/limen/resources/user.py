"""A person who may sign in: roles, traits and login status. Secrets live elsewhere."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from limen.resources.base import Resource


class UserStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    failed_logins: int = 0
    locked_until: datetime | None = None
    lock_reason: str = ""


class UserSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: list[str] = Field(default_factory=list)
    # Traits feed role templates: traits["logins"] is {{internal.logins}}.
    traits: dict[str, list[str]] = Field(default_factory=dict)
    created_by: str = ""
    created: datetime | None = None
    # False until signup set a password and a second factor.
    active: bool = False


class User(Resource):
    KIND = "user"
    spec: UserSpec = Field(default_factory=UserSpec)
    status: UserStatus = Field(default_factory=UserStatus)

    @property
    def logins(self) -> list[str]:
        return list(self.spec.traits.get("logins", []))

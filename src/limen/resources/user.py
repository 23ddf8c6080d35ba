"""A person who may sign in: roles, traits and login status. Secrets live elsewhere."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from limen.resources.base import Resource


class UserStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    failed_logins: int = 0
    locked_until: datetime | None = None
    lock_reason: str = ""


class SSOLink(BaseModel):
    """How an SSO user signed in last: the connector and what decided their roles."""

    model_config = ConfigDict(extra="forbid")

    connector: str
    connector_kind: str  # oidc or ldap
    subject: str = ""  # the provider's own id for the person (OIDC sub, LDAP DN)
    # The claims or groups that matched a mapping (never tokens or passwords).
    claims: dict[str, list[str]] = Field(default_factory=dict)
    last_login: datetime | None = None


class UserSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: list[str] = Field(default_factory=list)
    # Traits feed role templates: traits["logins"] is {{internal.logins}}.
    traits: dict[str, list[str]] = Field(default_factory=dict)
    created_by: str = ""
    created: datetime | None = None
    # False until signup set a password and a second factor.
    active: bool = False
    # local: password + TOTP kept here; sso: a connector says who they are and their
    # roles (spec.roles and traits hold the last mapping), never a local password.
    kind: Literal["local", "sso"] = "local"
    sso: SSOLink | None = None


class User(Resource):
    KIND = "user"
    spec: UserSpec = Field(default_factory=UserSpec)
    status: UserStatus = Field(default_factory=UserStatus)

    @property
    def logins(self) -> list[str]:
        return list(self.spec.traits.get("logins", []))

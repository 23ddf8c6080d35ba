"""Tokens: signup/reset tokens for people and join tokens for hosts.

Only a SHA-256 of each token is stored; the resource name is that hash, so a
leaked database does not hand out working tokens.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from limen.resources.base import Resource

TOKEN_BYTES = 16  # 128 bits of randomness, the floor the issue sets


def new_token() -> str:
    return secrets.token_hex(TOKEN_BYTES)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class UserTokenSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str
    purpose: Literal["signup", "reset"]
    # The TOTP secret offered during signup, kept so a retried signup sees the same one.
    pending_totp_secret: str = ""


class UserToken(Resource):
    KIND = "user_token"
    spec: UserTokenSpec


class JoinTokenSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: list[str] = Field(default_factory=lambda: ["node"])
    # The labels every node joining with this token gets; they win over the node's own.
    labels: dict[str, str] = Field(default_factory=dict)
    created_by: str = ""
    # How many more nodes may join with it: 1 by default (single use), unless reusable
    # (limen tokens add --reusable: any number until it expires).
    uses_left: int = Field(default=1, ge=0)
    reusable: bool = False

    @property
    def remaining(self) -> int | None:
        """Joins left, or None for a reusable token."""
        return None if self.reusable else self.uses_left


class JoinToken(Resource):
    KIND = "token"
    spec: JoinTokenSpec = Field(default_factory=JoinTokenSpec)

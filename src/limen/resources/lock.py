"""A lock: no new certificates or sessions for its target, and live sessions end."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, model_validator

from limen.resources.base import Resource


class LockTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str | None = None
    role: str | None = None
    login: str | None = None
    node: str | None = None  # a node's name or id

    @model_validator(mode="after")
    def _one_target(self) -> LockTarget:
        if not any((self.user, self.role, self.login, self.node)):
            raise ValueError("a lock needs a target: user, role, login or node")
        return self

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.model_dump().items() if v]
        return ",".join(parts)


class LockSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: LockTarget
    message: str = ""
    created_by: str = ""
    created: datetime | None = None


class Lock(Resource):
    KIND = "lock"
    spec: LockSpec

    def applies_to(
        self,
        user: str = "",
        roles: list[str] | None = None,
        login: str = "",
        node_names: tuple[str, ...] = (),
    ) -> bool:
        """All the target's fields must match (a lock on user+node locks that pair)."""
        target = self.spec.target
        checks = [
            target.user is None or target.user == user,
            target.role is None or target.role in (roles or []),
            target.login is None or target.login == login,
            target.node is None or target.node in node_names,
        ]
        return all(checks)

    def refusal(self) -> str:
        why = f": {self.spec.message}" if self.spec.message else ""
        until = (
            f" (until {self.metadata.expires:%Y-%m-%d %H:%M:%S} UTC)"
            if self.metadata.expires
            else ""
        )
        return f"access is locked for {self.spec.target.describe()}{why}{until}"

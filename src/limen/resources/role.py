"""Roles, shaped like Teleport's role v7: allow, deny and options."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from limen.durations import parse_duration
from limen.errors import BadParameter
from limen.resources.base import Resource
from limen.resources.session_policy import JoinSessionRule, RequireSessionJoin

_TEMPLATE = re.compile(
    r"^\{\{\s*((internal|external)\.[A-Za-z0-9_:-]+|"
    r"email\.local\(\s*(internal|external)\.[A-Za-z0-9_:-]+\s*\))\s*\}\}$"
)

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
    "connector",
    "instance",
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
    # Session sharing (resources/session_policy.py): who may join whose sessions, and
    # (allow only) which sessions of this role's holders need moderators present.
    join_sessions: list[JoinSessionRule] = Field(default_factory=list)
    require_session_join: list[RequireSessionJoin] = Field(default_factory=list)

    @field_validator("logins")
    @classmethod
    def _templates_parse(cls, value: list[str]) -> list[str]:
        for login in value:
            if ("{{" in login or "}}" in login) and not _TEMPLATE.match(login.strip()):
                raise ValueError(
                    f"{login!r} is not a template Limen knows: use {{{{internal.NAME}}}}, "
                    "{{external.NAME}} or {{email.local(external.NAME)}}"
                )
        return value

    @field_validator("node_labels")
    @classmethod
    def _regexes_compile(cls, value: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        for key, wanted in value.items():
            for pattern in wanted if isinstance(wanted, list) else [wanted]:
                if pattern.startswith("^") and pattern.endswith("$"):
                    try:
                        re.compile(pattern)
                    except re.error as exc:
                        raise ValueError(f"label {key!r}: {pattern!r} is not a valid regular "
                                         f"expression ({exc})") from None
        return value


def _enabled(value: object) -> object:
    """Teleport's spelling ``{enabled: true}`` means ``true``."""
    if isinstance(value, dict) and set(value) == {"enabled"}:
        return value["enabled"]
    return value


class PortForwarding(BaseModel):
    """Which directions of SSH port forwarding a role allows.

    ``local`` (``ssh -L``): true, false, or destination patterns (see node/destinations.py);
    ``remote`` (``ssh -R``): the node listens on its loopback and forwards back to the user.
    """

    model_config = ConfigDict(extra="forbid")

    local: bool | list[str] = False
    remote: bool = False

    _teleport_form = field_validator("local", "remote", mode="before")(
        lambda value: _enabled(value)
    )


class RoleOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_session_ttl: str = "30h"
    forward_agent: bool = False
    # true: local and remote forwarding (as Teleport's legacy option); a list: local
    # forwarding to those destinations only; or {local: ..., remote: ...}.
    port_forwarding: bool | list[str] | PortForwarding = False
    ssh_file_copy: bool = True
    client_idle_timeout: str | None = None
    disconnect_expired_cert: bool = False
    max_sessions: int | None = None
    record_session: Literal["best_effort", "strict"] = "best_effort"
    # Reserved for per-session MFA; only "off" is understood today.
    require_session_mfa: Literal[False, "off"] = False

    @field_validator("max_session_ttl", "client_idle_timeout")
    @classmethod
    def _durations(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_duration(value)
            except BadParameter as exc:
                raise ValueError(exc.message) from None
        return value

    def forwarding(self) -> PortForwarding:
        """``port_forwarding`` in its explicit form, whichever way it was written."""
        value = self.port_forwarding
        if isinstance(value, PortForwarding):
            return value
        if isinstance(value, list):
            return PortForwarding(local=value)
        return PortForwarding(local=value, remote=value)

    @field_validator("max_sessions")
    @classmethod
    def _positive(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError("max_sessions must be at least 1")
        return value


class RoleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allow: RoleConditions = Field(default_factory=RoleConditions)
    deny: RoleConditions = Field(default_factory=RoleConditions)
    options: RoleOptions = Field(default_factory=RoleOptions)

    @field_validator("deny")
    @classmethod
    def _no_denied_requirement(cls, value: RoleConditions) -> RoleConditions:
        if value.require_session_join:
            raise ValueError("require_session_join belongs under allow: a requirement "
                             "cannot be denied")
        return value


class Role(Resource):
    KIND = "role"
    version: str = "v7"
    spec: RoleSpec = Field(default_factory=RoleSpec)

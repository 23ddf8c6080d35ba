"""Session sharing in roles, shaped like Teleport's role v7.

``join_sessions`` (allow or deny): who may join the sessions of people holding which
roles, in which kinds of session and which modes. ``require_session_join`` (allow only):
a session of someone holding the role waits until ``count`` moderators matching
``filter`` have joined, and pauses or ends when the last of them leaves.

Filters are a small, closed language, checked when the role is saved:
``contains(user.spec.roles, "auditor")`` or ``equals(user.metadata.name, "bob")``,
alternatives joined with ``||``; an empty filter matches every moderator.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

JOIN_MODES = ("observer", "peer", "moderator")

Mode = Literal["observer", "peer", "moderator"]
Kind = Literal["ssh", "*"]

_TERM = re.compile(
    r'^\s*(contains\(\s*user\.spec\.roles\s*,\s*"([^"]+)"\s*\)'
    r'|equals\(\s*user\.metadata\.name\s*,\s*"([^"]+)"\s*\))\s*$'
)


def parse_filter(text: str) -> list[tuple[str, str]]:
    """The filter's alternatives as ("role", name) or ("user", name); ValueError when
    it says anything else."""
    if not text.strip():
        return []
    terms = []
    for part in text.split("||"):
        match = _TERM.match(part)
        if match is None:
            raise ValueError(
                f"filter {text!r} is not understood: use contains(user.spec.roles, \"ROLE\") "
                "or equals(user.metadata.name, \"USER\"), joined with ||")
        terms.append(("role", match.group(2)) if match.group(2) else ("user", match.group(3)))
    return terms


class JoinSessionRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    roles: list[str] = Field(min_length=1)  # the session owner's roles ("*": any)
    kinds: list[Kind] = Field(default_factory=lambda: ["ssh"])
    modes: list[Mode] = Field(min_length=1)


class RequireSessionJoin(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    filter: str = ""
    kinds: list[Kind] = Field(default_factory=lambda: ["ssh"])
    count: int = Field(default=1, ge=1)
    modes: list[Literal["moderator"]] = Field(default_factory=lambda: ["moderator"])
    on_leave: Literal["terminate", "pause"] = "terminate"

    @field_validator("filter")
    @classmethod
    def _filter_parses(cls, value: str) -> str:
        parse_filter(value)
        return value

    def admits(self, user: str, roles: list[str]) -> bool:
        """Whether a moderator with these roles counts toward this requirement."""
        terms = parse_filter(self.filter)
        return not terms or any(
            (kind == "role" and name in roles) or (kind == "user" and name == user)
            for kind, name in terms
        )

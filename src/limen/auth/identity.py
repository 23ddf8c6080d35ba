"""Who is calling: the result of authentication, input to authorization."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Identity:
    user: str
    roles: list[str] = field(default_factory=list)
    traits: dict[str, list[str]] = field(default_factory=dict)
    # "admin" for the data dir's own identity; "" for people.
    builtin: str = ""
    expires: datetime | None = None
    remote_addr: str = ""

    @property
    def is_admin(self) -> bool:
        return self.builtin == "admin"

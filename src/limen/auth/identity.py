"""Who is calling: the result of authentication, input to authorization."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from limen.resources import Node


@dataclass(frozen=True)
class Identity:
    user: str
    roles: list[str] = field(default_factory=list)
    traits: dict[str, list[str]] = field(default_factory=dict)
    # "admin" for the data dir's own identity; "" for people.
    builtin: str = ""
    expires: datetime | None = None
    remote_addr: str = ""
    # A node's API token: its registration as admitted for this request (registered,
    # this token current, no lock on it), so that the request itself need not read the
    # registration and the locks again. Made per request; None for everyone else.
    admitted_node: Node | None = field(default=None, compare=False, repr=False)

    @property
    def is_admin(self) -> bool:
        return self.builtin == "admin"

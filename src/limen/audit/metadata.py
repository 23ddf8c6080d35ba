"""What every audit event is built from: a typed base and the shared metadata.

Each field is named once, here, and every producer uses that name (the names auditors'
tools know from Teleport: ``addr.remote``, ``sid``, ``server_id``, ...):

- ``UserMeta``: who (``user``, the Limen user; ``login``, the account on the node);
- ``ConnectionMeta``: from where (``addr.remote``, ``addr.local``);
- ``SessionMeta``: which session (``sid``);
- ``ServerMeta``: on which node (``server_id``, ``server_hostname``, ``server_addr``);
- ``ClaimMeta``: what a node said that the auth service could not back (``node_time``,
  ``claimed_user``, ``claimed_login``), kept beside the facts, never in their place;
- ``CertMeta``: the user certificate a node showed, as the auth service read it.

A model forbids unknown fields and does not convert types (a number sent as a string is
refused), so a producer that drifts from the schema fails loudly instead of writing a
field nobody searches for.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from limen.audit.events import EventType
from limen.errors import BadParameter


class AuditEvent(BaseModel):
    """One event's own fields (the log adds event, code, uid, time and the chain)."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    TYPE: ClassVar[EventType]
    # The code written when the event reports a refusal (success or allowed false).
    FAILURE: ClassVar[EventType | None] = None

    @classmethod
    def types(cls) -> tuple[EventType, ...]:
        return (cls.TYPE,) if cls.FAILURE is None else (cls.TYPE, cls.FAILURE)

    def event_type(self) -> EventType:
        # Read from pydantic's store of private values: ``self._chosen`` goes through
        # its __getattr__, a few microseconds on every event written.
        chosen = (self.__pydantic_private__ or {}).get("_chosen")
        if chosen is not None:
            return chosen
        if self.FAILURE is None:
            return self.TYPE
        # Named fields only: getattr on a missing one costs pydantic an exception.
        fields = type(self).model_fields
        failed = any(name in fields and getattr(self, name) is False
                     for name in ("success", "allowed"))
        return self.FAILURE if failed else self.TYPE

    def choose(self, event_type: EventType) -> None:
        """Write this event under one of its own codes (a caller that names the code)."""
        if event_type not in self.types():
            raise BadParameter(f"{event_type.code} is not a code of event {self.TYPE.name}")
        # Kept in pydantic's store of private values, set only here: a declared
        # PrivateAttr made pydantic run its private-attribute set-up, once per base
        # class, in every event's constructor (a third of the cost of making one).
        object.__setattr__(self, "__pydantic_private__", {"_chosen": event_type})

    def fields(self) -> dict[str, Any]:
        """The fields as written: dotted names, nothing that is unset, the shared metadata
        first (in the order a person reads a line: who, where, then the event's own)."""
        dumped = self.model_dump(by_alias=True, exclude_none=True)
        first = {k: dumped.pop(k) for k in METADATA_ORDER if k in dumped}
        return {**first, **dumped}


class UserMeta(AuditEvent):
    user: str | None = None
    login: str | None = None


class ConnectionMeta(AuditEvent):
    addr_remote: str | None = Field(default=None, alias="addr.remote")
    addr_local: str | None = Field(default=None, alias="addr.local")


class SessionMeta(AuditEvent):
    sid: str


class ServerMeta(AuditEvent):
    server_id: str | None = None
    server_hostname: str | None = None
    server_addr: str | None = None


class ClaimMeta(AuditEvent):
    node_time: str | None = None  # when the node says it happened (``time`` is receipt)
    claimed_user: str | None = None
    claimed_login: str | None = None


class CertMeta(AuditEvent):
    cert_serial: int | None = None
    key_fingerprint: str | None = None  # SHA256:... of the certified key, as ssh-keygen -l


METADATA_ORDER = (
    "user", "login", "sid", "server_id", "server_hostname", "server_addr", "addr.remote",
    "addr.local", "claimed_user", "claimed_login", "node_time", "cert_serial",
    "key_fingerprint",
)


def problem_text(event: str, exc: ValidationError) -> str:
    """One sentence per wrong field, naming the event and the field."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "(the event)"
        if error["type"] == "extra_forbidden":
            parts.append(f"event {event!r} has no field {field!r}")
        elif error["type"] == "missing":
            parts.append(f"event {event!r} needs the field {field!r}")
        else:
            parts.append(f"event {event!r}: field {field!r}: {error['msg']}")
    return "; ".join(parts)

"""The common shape of every resource: kind, version, metadata, spec."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

from limen.errors import BadParameter

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,252}$")


def validate_name(name: str, what: str = "name") -> str:
    """Names end up in keys, file names and certificates: keep them boring."""
    if not _NAME.match(name or ""):
        raise BadParameter(
            f"{what} {name!r} is not valid: use letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


class Metadata(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    expires: datetime | None = None
    # Set from the backend's revision when read; never written back as data.
    revision: str = Field(default="", exclude=True)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "use letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
            )
        return value


class Resource(BaseModel):
    """Base of every stored resource. Subclasses set KIND and declare `spec`."""

    model_config = ConfigDict(extra="forbid")

    KIND: ClassVar[str] = ""
    kind: str = ""
    version: str = "v1"
    metadata: Metadata

    def model_post_init(self, _context: Any) -> None:
        if not self.kind:
            self.kind = self.KIND
        elif self.kind != self.KIND:
            raise ValueError(f"kind must be {self.KIND!r}, not {self.kind!r}")

    @property
    def name(self) -> str:
        return self.metadata.name

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, revision: str = "") -> Self:
        obj = cls.model_validate_json(data)
        obj.metadata.revision = revision
        return obj

    def to_public(self) -> dict[str, Any]:
        """The form shown to people and returned by the API."""
        return self.model_dump(mode="json", exclude_none=True)

"""Searching and verifying the audit log (who may: the rule on ``event``, checked by
limen.auth.facade before these run)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import asyncssh

from limen.audit.chain import parse_time
from limen.audit.log import AuditLog
from limen.audit.store import EventPage, EventQuery, EventStore
from limen.audit.verify import Report, verify_files, verify_store
from limen.audit.vouchers import trusted_keys
from limen.durations import parse_duration
from limen.errors import BadParameter

MAX_PAGE = 1000
_INT64 = 2**63 - 1


def parse_when(text: str, now: int) -> int:
    """A time as nanoseconds: "1h" (that long ago), "now", an RFC 3339 time or a date."""
    value = text.strip()
    if value == "now":
        return now
    if value and value[0].isdigit() and not any(c in value for c in "-:T"):
        delta = parse_duration(value)
        return now - int(delta.total_seconds() * 1_000_000_000)
    try:
        return parse_time(value if "T" in value else value + "T00:00:00Z")
    except ValueError:
        raise BadParameter(
            f"{text!r} is not a time: write 1h (that long ago), 2024-05-01 or "
            "2024-05-01T12:00:00Z"
        ) from None


def encode_cursor(cursor: tuple[int, int] | None) -> str | None:
    if cursor is None:
        return None
    return base64.urlsafe_b64encode(f"{cursor[0]}:{cursor[1]}".encode()).decode()


def decode_cursor(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        when, _, row = base64.urlsafe_b64decode(text.encode()).decode().partition(":")
        cursor = int(when), int(row)
    except (ValueError, UnicodeDecodeError):
        cursor = (-1, -1)
    if not all(0 <= part <= _INT64 for part in cursor):  # stored as signed 64-bit integers
        raise BadParameter("the page cursor is not valid; start the search again")
    return cursor


class AuditSearch:
    def __init__(self, audit: AuditLog, store: EventStore,
                 host_ca: asyncssh.SSHKey | None = None) -> None:
        self.audit = audit
        self.store = store
        self.host_ca = host_ca  # vouches for the audit keys of other logs in the store

    async def search(self, query: EventQuery) -> tuple[list[dict[str, Any]], str | None]:
        """A page of events, newest first, and the cursor for the next page (or None)."""
        if not 1 <= query.limit <= MAX_PAGE:
            raise BadParameter(f"a page holds 1 to {MAX_PAGE} events")
        page: EventPage = await self.store.search(query)
        return [json.loads(e.data) for e in page.events], encode_cursor(page.cursor)

    async def verify(self, since_ns: int | None = None) -> Report:
        """Check the chain in this auth service's files and in the store."""
        keys = trusted_keys(await self.store.log_keys(), self.host_ca,
                            {self.audit.log_id: self.audit.key.public_b64})
        report, chain = await asyncio.to_thread(
            verify_files, self.audit.directory, keys, since_ns
        )
        if report.ok:
            await verify_store(self.store, keys, chain, since_ns, report)
        return report

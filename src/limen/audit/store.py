"""The searchable store of audit events and session recordings: what it holds and answers.

The JSON-lines files are the record of truth (written and fsynced first); the store is
an index over them plus the recordings, on the cluster's storage engine: SQLite by
default (a file of its own, DATA_DIR/audit.sqlite, so audit writes never queue behind
the cluster's write lock), PostgreSQL when configured (the same database and schema as
the cluster, tables prefixed ``audit_``), memory for tests. The SQL lives in
limen.backend (events_sql.py, recordings_sql.py); this module is the contract.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from limen.audit.chain import parse_time


@dataclass(frozen=True)
class StoredEvent:
    """One event as the store keeps it: the exact JSON line plus the columns searched."""

    log_id: str
    seq: int
    uid: str
    time_ns: int
    event: str
    code: str
    user: str | None
    node: str | None  # server_hostname
    server_id: str | None
    sid: str | None
    hash: str
    data: str  # the JSON line as written to the file (without the newline)


def stored_event(record: dict[str, Any], line: str) -> StoredEvent:
    """The store's row for a record the log wrote as ``line``."""
    return StoredEvent(
        log_id=record["log_id"], seq=record["seq"], uid=str(record["uid"]),
        time_ns=parse_time(record["time"]), event=str(record["event"]),
        code=str(record["code"]), user=_text(record.get("user")),
        node=_text(record.get("server_hostname")), server_id=_text(record.get("server_id")),
        sid=_text(record.get("sid")), hash=record["hash"], data=line,
    )


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


@dataclass(frozen=True)
class RegisteredKey:
    """A log's audit key as the store holds it, with the cluster CA's voucher for it
    (limen.audit.vouchers) when there is one."""

    public_key: str
    voucher: str | None = None


@dataclass(frozen=True)
class EventQuery:
    since_ns: int | None = None
    until_ns: int | None = None
    types: tuple[str, ...] = ()
    user: str | None = None
    node: str | None = None  # a node's name or id
    session: str | None = None
    sessions: tuple[str, ...] = ()  # any of these sessions
    limit: int = 100
    cursor: tuple[int, int] | None = None  # (time_ns, row id) of the last event seen


@dataclass
class EventPage:
    events: list[StoredEvent]
    cursor: tuple[int, int] | None  # pass back for the next (older) page; None at the end


@dataclass
class RecordingMeta:
    session_id: str
    user: str = ""
    login: str = ""
    node: str = ""
    node_id: str = ""
    kind: str = ""  # shell or exec
    command: str = ""
    start_ns: int = 0
    end_ns: int | None = None
    size: int = 0  # bytes of asciicast stored
    complete: bool = False  # every byte arrived and the session ended normally
    interrupted: bool = False  # the session ended because its node stopped mid-way
    extra: dict[str, Any] = field(default_factory=dict)


class EventStore(Protocol):
    async def register_log(self, log_id: str, public_key: str,
                           voucher: str | None = None) -> None:
        """Record a log's key (the first one stays) and its voucher (the first stays)."""
        ...
    async def log_keys(self) -> dict[str, RegisteredKey]: ...
    async def insert(self, rows: list[StoredEvent]) -> None:
        """Add rows; rows already there (same log and seq, or same uid) are skipped."""
        ...
    async def insert_written(self, written: list[tuple[dict[str, Any], str]]) -> None:
        """Add what the log has just written: each record with its line, its time as
        chain.format_time writes it. The same rows as ``insert`` of ``stored_event``
        of each; a store may take the columns from the lines instead."""
        ...
    async def last(self, log_id: str) -> StoredEvent | None: ...
    async def known_uids(self, uids: Sequence[str]) -> set[str]:
        """Those of ``uids`` that events stored here carry."""
        ...
    async def search(self, query: EventQuery) -> EventPage:
        """Newest first; ``cursor`` continues after the previous page."""
        ...
    async def chain(self, log_id: str, after_seq: int, limit: int) -> list[StoredEvent]:
        """Rows of one log in seq order, for verification."""
        ...
    async def by_event(self, log_id: str, event: str) -> list[StoredEvent]: ...
    async def delete_through(self, log_id: str, seq: int) -> int: ...
    async def log_ids(self) -> list[str]: ...
    async def count(self) -> int: ...


class RecordingStore(Protocol):
    async def upsert_meta(self, meta: RecordingMeta) -> RecordingMeta:
        """Create or update what is known about a recording; size is never changed here."""
        ...
    async def append(self, session_id: str, offset: int, data: bytes,
                     extract: Callable[[bytes], str]) -> int:
        """Store bytes at ``offset`` if they extend the recording; return its size after.

        Bytes already stored are skipped (a retry); a gap stores nothing, and the
        returned size tells the sender where to resume. ``extract`` turns the stored
        bytes into the printed text that ``search_text`` looks in.
        """
        ...
    async def put_whole(self, whole: Sequence[tuple[RecordingMeta, bytes]],
                        extract: Callable[[bytes], str]) -> list[bool]:
        """Store recordings sent whole (metadata and every byte), in one transaction; one
        the store already has (or that came earlier in ``whole``) is left as it was.
        Returns, for each, whether it was stored."""
        ...
    async def get(self, session_id: str) -> RecordingMeta: ...
    async def list(self, limit: int, since_ns: int | None = None) -> list[RecordingMeta]: ...
    def read(self, session_id: str) -> AsyncIterator[bytes]: ...
    async def search_text(self, needle: str, limit: int) -> list[RecordingMeta]:
        """Recordings whose printed text contains ``needle`` (case-insensitive)."""
        ...
    async def delete_ended_before(self, cutoff_ns: int) -> int: ...


class AuditStore(Protocol):
    events: EventStore
    recordings: RecordingStore

    async def close(self) -> None: ...


async def open_audit_store(
    kind: str, data_dir: Path, dsn: str | None = None, schema: str | None = None
) -> AuditStore:
    """The store on the cluster's engine: see the module docstring for where it lives."""
    from limen.backend.audit_store import open_store

    return await open_store(kind, path=str(data_dir / "audit.sqlite"), dsn=dsn, schema=schema)

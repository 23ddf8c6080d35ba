"""Opening the audit store (events and recordings) on SQLite, PostgreSQL or memory.

The tables are limen.backend.events_sql and recordings_sql; both share one engine and
the connection helpers here, which turn driver errors into ConnectionProblem the same
way the cluster backend does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from limen.backend.audit_db import Database
from limen.backend.events_sql import SQLEventStore, reader_for
from limen.backend.recordings_sql import SQLRecordingStore
from limen.backend.sql_dialects import (
    Dialect,
    PostgresDialect,
    SQLiteDialect,
    open_engine,
)
from limen.errors import BadParameter

if TYPE_CHECKING:
    from limen.backend.audit_memory import MemoryAuditStore


class SQLAuditStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # One reader straight through the driver for both (limen.backend.audit_reads).
        self._reader = reader_for(db.dialect)
        self.events = SQLEventStore(db, self._reader)
        self.recordings = SQLRecordingStore(db, self._reader)

    async def close(self) -> None:
        await self._reader.close()
        await self.db.close()


def _relax_sync(engine: AsyncEngine) -> None:
    """The day files are fsynced before an event is acknowledged and the store is refilled
    from them after a crash, so the store needs no fsync per commit of its own (WAL with
    synchronous=NORMAL stays consistent; only the newest commits can be lost)."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA cache_size = -65536")
        finally:
            cursor.close()


async def open_store(
    kind: str, *, path: str | None = None, dsn: str | None = None, schema: str | None = None
) -> SQLAuditStore | MemoryAuditStore:
    if kind == "memory":
        from limen.backend.audit_memory import MemoryAuditStore

        return MemoryAuditStore()
    if kind == "sqlite":
        if not path:
            raise BadParameter("the SQLite audit store needs a file path")
        dialect: Dialect = SQLiteDialect(path)
    elif kind == "postgres":
        if not dsn:
            raise BadParameter("the PostgreSQL audit store needs a DSN")
        dialect = PostgresDialect(dsn, schema)
    else:
        raise BadParameter(f"unknown storage type {kind!r} for the audit store")
    from limen.backend.audit_tables import audit_metadata

    engine = await open_engine(dialect, audit_metadata, _relax_sync if kind == "sqlite" else None)
    return SQLAuditStore(Database(dialect, engine))

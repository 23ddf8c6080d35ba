"""Audit events in SQL: insert batches, newest-first search with a keyset cursor, and
reads in chain order for verification."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, func, select, tuple_

from limen.audit.store import EventPage, EventQuery, RegisteredKey, StoredEvent, stored_event
from limen.backend.audit_db import Database
from limen.backend.audit_reads import PostgresReader
from limen.backend.audit_tables import events, logs, vouchers
from limen.backend.sql_dialects import PostgresDialect, SQLiteDialect
from limen.backend.sqlite_reads import CompiledSQL, SQLiteReader, compile_once

_COLUMNS = (
    events.c.log_id, events.c.seq, events.c.uid, events.c.time_ns, events.c.event,
    events.c.code, events.c.user, events.c.node, events.c.server_id, events.c.sid,
    events.c.hash, events.c.data,
)
_BATCH = 1000  # rows per INSERT
_EXTRACTS = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(_COLUMNS)))
_SQLITE_INSERT = (
    f"INSERT INTO {events.name} ({', '.join(c.name for c in _COLUMNS)}) "
    f"SELECT {_EXTRACTS} FROM json_each(?) "
    "WHERE true ON CONFLICT DO NOTHING"  # WHERE true: else ON reads as a join's
)
_JSON_ROWS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _field(name: str) -> str:
    return f"json_extract(value, '$.{name}')"


def _text_field(name: str) -> str:
    return f"NULLIF({_field(name)}, '')"  # as stored_event: an empty text is no value


# chain.format_time's text, always 30 characters: 2024-05-01T12:00:00.123456789Z.
_TIME_NS = (f"CAST(strftime('%s', substr({_field('time')}, 1, 19)) AS INTEGER) * 1000000000"
            f" + CAST(substr({_field('time')}, 21, 9) AS INTEGER)")
_LINE_COLUMNS = (
    _field("log_id"), _field("seq"), _field("uid"), _TIME_NS, _field("event"), _field("code"),
    _text_field("user"), _text_field("server_hostname"), _text_field("server_id"),
    _text_field("sid"), _field("hash"), "value",
)
# The lines the log wrote, joined into one JSON array: SQLite takes each column from its
# line (without the GIL) and keeps the line as json_each gives it back, which for the
# log's compact lines is the line itself (tests/audit/test_store.py).
_SQLITE_INSERT_LINES = (
    f"INSERT INTO {events.name} ({', '.join(c.name for c in _COLUMNS)}) "
    f"SELECT {', '.join(_LINE_COLUMNS)} FROM json_each(?) "
    "WHERE true ON CONFLICT DO NOTHING"
)


def _row(row: Any) -> StoredEvent:
    return StoredEvent(*row[:12])


def _params(event: StoredEvent) -> tuple[Any, ...]:
    """An event's values in _COLUMNS order."""
    return (event.log_id, event.seq, event.uid, event.time_ns, event.event, event.code,
            event.user, event.node, event.server_id, event.sid, event.hash, event.data)


def looks_like_id(value: str) -> bool:
    """Node ids are UUIDs; names are host names (which never have four dashes and hex)."""
    parts = value.split("-")
    return len(parts) == 5 and all(p and all(c in "0123456789abcdef" for c in p) for p in parts)


_KNOWN_CHUNK = 100  # uids per query of known_uids (a node's batch is at most 100 events)


def _known_uids(count: int) -> Any:
    return select(events.c.uid).where(events.c.uid.in_(
        [bindparam(f"uid{at}") for at in range(count)]))


def _search(query: EventQuery) -> tuple[Any, dict[str, Any], tuple[str, ...]]:
    """A search's statement, its values bound by name, and its shape: the names bound
    (which filters, how many types) and the node's column. The statement depends on
    the shape alone, so its SQL is compiled once per shape."""
    clauses: list[Any] = []
    values: dict[str, Any] = {}
    column = events.c.node

    def bound(name: str, value: Any) -> Any:
        values[name] = value
        return bindparam(name)

    if query.since_ns is not None:
        clauses.append(events.c.time_ns >= bound("since_ns", query.since_ns))
    if query.until_ns is not None:
        clauses.append(events.c.time_ns <= bound("until_ns", query.until_ns))
    if query.types:
        clauses.append(events.c.event.in_(
            [bound(f"type_{i}", kind) for i, kind in enumerate(query.types)]))
    if query.user:
        clauses.append(events.c.user == bound("user", query.user))
    if query.node:
        column = events.c.server_id if looks_like_id(query.node) else events.c.node
        clauses.append(column == bound("node", query.node))
    if query.session:
        clauses.append(events.c.sid == bound("session", query.session))
    if query.sessions:
        clauses.append(events.c.sid.in_(
            [bound(f"session_{i}", sid) for i, sid in enumerate(query.sessions)]))
    if query.cursor is not None:
        clauses.append(tuple_(events.c.time_ns, events.c.id) < tuple_(
            bound("cursor_time", query.cursor[0]), bound("cursor_id", query.cursor[1])))
    stmt = select(*_COLUMNS, events.c.id)
    stmt = (stmt.where(and_(*clauses)) if clauses else stmt).order_by(
        events.c.time_ns.desc(), events.c.id.desc()
    ).limit(bound("limit", query.limit + 1))
    return stmt, values, (*values, column.name)


def reader_for(dialect: Any) -> SQLiteReader | PostgresReader:
    if isinstance(dialect, SQLiteDialect):
        return SQLiteReader(dialect.path)
    assert isinstance(dialect, PostgresDialect)
    return PostgresReader(dialect)


class SQLEventStore:
    def __init__(self, db: Database, reader: SQLiteReader | PostgresReader) -> None:
        self.db = db
        self._insert: str | None = None
        # Searches go straight through the driver (limen.backend.audit_reads).
        self._reader = reader
        self._searches: dict[tuple[str, ...], CompiledSQL] = {}

    async def register_log(self, log_id: str, public_key: str,
                           voucher: str | None = None) -> None:
        insert = self.db.dialect.insert

        def body(conn: Connection) -> None:
            conn.execute(insert(logs).values(log_id=log_id, public_key=public_key)
                         .on_conflict_do_nothing())
            if voucher is not None:
                conn.execute(insert(vouchers).values(log_id=log_id, voucher=voucher)
                             .on_conflict_do_nothing())
        await self.db.transact(body)

    async def log_keys(self) -> dict[str, RegisteredKey]:
        joined = logs.outerjoin(vouchers, logs.c.log_id == vouchers.c.log_id)
        stmt = select(logs.c.log_id, logs.c.public_key, vouchers.c.voucher).select_from(joined)
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return {log_id: RegisteredKey(key, voucher) for log_id, key, voucher in rows}

    async def insert(self, rows: list[StoredEvent]) -> None:
        if not rows:
            return
        if self.db.dialect.name == "sqlite":
            await self._insert_sqlite(rows)
            return
        sql = self._insert_sql()

        def body(conn: Connection) -> None:
            for start in range(0, len(rows), _BATCH):
                conn.exec_driver_sql(sql, [_params(r) for r in rows[start:start + _BATCH]])
        await self.db.transact(body)

    async def insert_written(self, written: list[tuple[dict[str, Any], str]]) -> None:
        if not written:
            return
        if self.db.dialect.name != "sqlite":
            await self.insert([stored_event(record, line) for record, line in written])
            return
        # Building a row of each record and encoding the rows again (the line, escaped
        # inside them) was a fifth of the audit log's GIL-held time under load.
        arrays = [",".join(line for _, line in written[start:start + _BATCH])
                  for start in range(0, len(written), _BATCH)]

        def body(conn: Connection) -> None:
            for lines in arrays:
                conn.exec_driver_sql(_SQLITE_INSERT_LINES, (f"[{lines}]",))
        await self.db.transact(body)

    async def _insert_sqlite(self, rows: list[StoredEvent]) -> None:
        """One statement per batch, the rows handed over as one JSON array.

        Python's sqlite3 lets go of the GIL for every row it steps (executemany), and
        takes it back only when the busy audit writer lets it have it (up to 5 ms
        later): under load the copy crawled and the handovers slowed the writer too.
        A single statement binds one value and does the whole batch without the GIL.
        """
        arrays = [_JSON_ROWS.encode([_params(r) for r in rows[start:start + _BATCH]])
                  for start in range(0, len(rows), _BATCH)]

        def body(conn: Connection) -> None:
            for array in arrays:
                conn.exec_driver_sql(_SQLITE_INSERT, (array,))
        await self.db.transact(body)

    def _insert_sql(self) -> str:
        """The INSERT in the driver's own words, compiled once: SQLAlchemy's per-row
        parameter processing cost more than the database's own work per event."""
        if self._insert is None:
            stmt = self.db.dialect.insert(events).values(
                {column.name: None for column in _COLUMNS}).on_conflict_do_nothing()
            compiled = stmt.compile(dialect=self.db.engine.dialect)
            if list(compiled.positiontup or ()) != [c.name for c in _COLUMNS]:
                raise RuntimeError("the audit INSERT does not bind the columns in order")
            self._insert = str(compiled)
        return self._insert

    async def last(self, log_id: str) -> StoredEvent | None:
        stmt = (select(*_COLUMNS).where(events.c.log_id == log_id)
                .order_by(events.c.seq.desc()).limit(1))
        async with self.db.read() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else _row(row)

    async def known_uids(self, uids: Sequence[str]) -> set[str]:
        """Asked for every batch of events a node reports (its replay check): one trip
        per hundred, as a search."""
        known: set[str] = set()
        for start in range(0, len(uids), _KNOWN_CHUNK):
            chunk = uids[start:start + _KNOWN_CHUNK]
            shape = ("known_uids", str(len(chunk)))
            found = self._searches.get(shape) or self._compiled(_known_uids(len(chunk)), shape)
            rows = await self._reader.rows(found.sql, found.params(
                {f"uid{at}": uid for at, uid in enumerate(chunk)}))
            known.update(row[0] for row in rows)
        return known

    async def search(self, query: EventQuery) -> EventPage:
        stmt, values, shape = _search(query)
        found = self._compiled(stmt, shape)
        rows = await self._reader.rows(found.sql, found.params(values))
        more = len(rows) > query.limit
        rows = rows[:query.limit]
        cursor = (rows[-1][3], rows[-1][12]) if more and rows else None  # time_ns, id
        return EventPage([_row(r) for r in rows], cursor)

    def _compiled(self, stmt: Any, shape: tuple[str, ...]) -> CompiledSQL:
        """The SQL of a shape of search (or of the uid check), compiled once."""
        found = self._searches.get(shape)
        if found is None:
            found = self._searches[shape] = compile_once(stmt, self.db.engine.dialect)
        return found

    async def chain(self, log_id: str, after_seq: int, limit: int) -> list[StoredEvent]:
        stmt = (select(*_COLUMNS).where(events.c.log_id == log_id, events.c.seq > after_seq)
                .order_by(events.c.seq).limit(limit))
        async with self.db.read() as conn:
            return [_row(r) for r in (await conn.execute(stmt)).all()]

    async def by_event(self, log_id: str, event: str) -> list[StoredEvent]:
        stmt = (select(*_COLUMNS).where(events.c.log_id == log_id, events.c.event == event)
                .order_by(events.c.seq))
        async with self.db.read() as conn:
            return [_row(r) for r in (await conn.execute(stmt)).all()]

    async def log_ids(self) -> list[str]:
        async with self.db.read() as conn:
            rows = (await conn.execute(select(events.c.log_id).distinct())).scalars()
            return sorted(rows)

    async def count(self) -> int:
        async with self.db.read() as conn:
            return int((await conn.execute(select(func.count()).select_from(events))).scalar())

    async def delete_through(self, log_id: str, seq: int) -> int:
        stmt = delete(events).where(events.c.log_id == log_id, events.c.seq <= seq)
        return await self.db.transact(lambda conn: conn.execute(stmt).rowcount or 0)


"""Session recordings in SQL: metadata rows, and the asciicast bytes as ordered chunks
with their printed text beside them for search.

Appends are idempotent by offset, so a node that lost an answer resends safely, and
every auth instance sharing the database sees the same bytes.
"""

from __future__ import annotations

import json
from collections import namedtuple
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, or_, select, update

from limen.audit.store import RecordingMeta
from limen.backend.audit_db import Database
from limen.backend.audit_reads import PostgresReader
from limen.backend.audit_tables import chunks, recordings
from limen.backend.sql_dialects import upsert
from limen.backend.sqlite_reads import SQLiteReader, compile_once
from limen.errors import NotFound

TAIL = 256  # characters of text carried into the next chunk (longest search that spans)
_READ_BATCH = 64  # chunks per query when streaming a recording

_META_FIELDS = ("user", "login", "node", "node_id", "kind", "command", "start_ns", "end_ns",
                "complete", "interrupted", "extra")

# The writes are fixed statements given their values as parameters: a statement built
# around its values makes SQLAlchemy derive a new cache key from every value, at each
# write (see limen.backend.sql_dialects.upsert).
_NEW_RECORDING = recordings.insert()
_NEW_CHUNK = chunks.insert()
_GROWN = (update(recordings).where(recordings.c.session_id == bindparam("sid"))
          .values(size=bindparam("new_size"), tail=bindparam("new_tail")))


_META_COLUMNS = (
    recordings.c.session_id, recordings.c.user, recordings.c.login, recordings.c.node,
    recordings.c.node_id, recordings.c.kind, recordings.c.command, recordings.c.start_ns,
    recordings.c.end_ns, recordings.c.size, recordings.c.complete, recordings.c.interrupted,
    recordings.c.extra,
)


_BY_ID = select(*_META_COLUMNS).where(recordings.c.session_id == bindparam("session_id"))
# A row as the driver gives it, with the names _meta reads.
_MetaRow = namedtuple("_MetaRow", [column.name for column in _META_COLUMNS])  # type: ignore[misc]


def _meta(row: Any) -> RecordingMeta:
    return RecordingMeta(
        session_id=row.session_id, user=row.user, login=row.login, node=row.node,
        node_id=row.node_id, kind=row.kind, command=row.command, start_ns=row.start_ns,
        end_ns=row.end_ns, size=row.size, complete=bool(row.complete),
        interrupted=bool(row.interrupted), extra=json.loads(row.extra or "{}"),
    )


def _meta_values(meta: RecordingMeta) -> dict[str, Any]:
    """The columns a recording's metadata sets (its size and tail are the bytes')."""
    return {
        "user": meta.user, "login": meta.login, "node": meta.node, "node_id": meta.node_id,
        "kind": meta.kind, "command": meta.command, "start_ns": meta.start_ns,
        "end_ns": meta.end_ns, "complete": meta.complete, "interrupted": meta.interrupted,
        "extra": json.dumps(meta.extra, sort_keys=True),
    }


def like_pattern(needle: str) -> str:
    escaped = needle.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class SQLRecordingStore:
    def __init__(self, db: Database, reader: SQLiteReader | PostgresReader) -> None:
        self.db = db
        # A recording's metadata by id is read for every recording a node sends (who
        # owns it): through the driver, one trip, not SQLAlchemy's five.
        self._reader = reader
        self._by_id = compile_once(_BY_ID, db.engine.dialect)

    async def upsert_meta(self, meta: RecordingMeta) -> RecordingMeta:
        stmt = upsert(self.db.dialect, recordings, recordings.c.session_id, _META_FIELDS)
        values = {"session_id": meta.session_id, "size": 0, "tail": "", **_meta_values(meta)}
        await self.db.transact(lambda conn: conn.execute(stmt, values))
        return await self.get(meta.session_id)

    async def append(self, session_id: str, offset: int, data: bytes,
                     extract: Callable[[bytes], str]) -> int:
        def body(conn: Connection) -> int:
            row = conn.execute(
                select(recordings.c.size, recordings.c.tail)
                .where(recordings.c.session_id == session_id).with_for_update()
            ).first()
            if row is None:
                conn.execute(_NEW_RECORDING, {"session_id": session_id, "size": 0, "tail": ""})
                size, tail = 0, ""
            else:
                size, tail = int(row.size), row.tail
            if offset > size or offset + len(data) <= size:
                return size  # a gap (resend from size) or bytes we already have
            new = data[size - offset:]
            text = tail + extract(new).lower()
            conn.execute(_NEW_CHUNK, {"session_id": session_id, "offset": size, "data": new,
                                      "text": text})
            conn.execute(_GROWN, {"sid": session_id, "new_size": size + len(new),
                                  "new_tail": text[-TAIL:]})
            return size + len(new)
        return await self.db.transact(body)

    async def put_whole(self, whole: Sequence[tuple[RecordingMeta, bytes]],
                        extract: Callable[[bytes], str]) -> list[bool]:
        if not whole:
            return []
        sids = [meta.session_id for meta, _ in whole]

        def body(conn: Connection) -> list[bool]:
            held = set(conn.execute(select(recordings.c.session_id)
                                    .where(recordings.c.session_id.in_(sids))).scalars())
            stored: list[bool] = []
            for sid in sids:  # a repeat in ``whole`` is left as the first made it
                stored.append(sid not in held)
                held.add(sid)
            new = [item for item, fresh in zip(whole, stored, strict=True) if fresh]
            texts = [extract(data).lower() for _, data in new]
            if new:
                conn.execute(_NEW_RECORDING, [
                    {**_meta_values(meta), "session_id": meta.session_id, "size": len(data),
                     "tail": text[-TAIL:]} for (meta, data), text in zip(new, texts, strict=True)])
            chunked = [{"session_id": meta.session_id, "offset": 0, "data": data, "text": text}
                       for (meta, data), text in zip(new, texts, strict=True) if data]
            if chunked:
                conn.execute(_NEW_CHUNK, chunked)
            return stored
        return await self.db.transact(body)

    async def get(self, session_id: str) -> RecordingMeta:
        rows = await self._reader.rows(
            self._by_id.sql, self._by_id.params({"session_id": session_id}), point=True)
        if not rows:
            raise NotFound(f"no recording of session {session_id}")
        return _meta(_MetaRow(*rows[0]))

    async def list(self, limit: int, since_ns: int | None = None) -> list[RecordingMeta]:
        stmt = select(*_META_COLUMNS)
        if since_ns is not None:
            stmt = stmt.where(
                or_(recordings.c.end_ns.is_(None), recordings.c.end_ns >= since_ns)
            )
        stmt = stmt.order_by(recordings.c.start_ns.desc()).limit(limit)
        async with self.db.read() as conn:
            return [_meta(r) for r in (await conn.execute(stmt)).all()]

    async def read(self, session_id: str) -> AsyncIterator[bytes]:
        after = -1
        while True:
            stmt = (select(chunks.c.offset, chunks.c.data)
                    .where(chunks.c.session_id == session_id, chunks.c.offset > after)
                    .order_by(chunks.c.offset).limit(_READ_BATCH))
            async with self.db.read() as conn:
                rows = (await conn.execute(stmt)).all()
            for offset, data in rows:
                yield bytes(data)
                after = offset
            if len(rows) < _READ_BATCH:
                return

    async def search_text(self, needle: str, limit: int) -> list[RecordingMeta]:
        found = (select(chunks.c.session_id)
                 .where(chunks.c.text.like(like_pattern(needle), escape="\\")).distinct())
        stmt = (select(*_META_COLUMNS).where(recordings.c.session_id.in_(found))
                .order_by(recordings.c.start_ns.desc()).limit(limit))
        async with self.db.read() as conn:
            return [_meta(r) for r in (await conn.execute(stmt)).all()]

    async def delete_ended_before(self, cutoff_ns: int) -> int:
        ended = func.coalesce(recordings.c.end_ns, recordings.c.start_ns)
        old = select(recordings.c.session_id).where(ended < cutoff_ns)

        def body(conn: Connection) -> int:
            conn.execute(delete(chunks).where(chunks.c.session_id.in_(old)))
            return conn.execute(delete(recordings).where(ended < cutoff_ns)).rowcount or 0
        return await self.db.transact(body)

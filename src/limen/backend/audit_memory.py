"""The audit store in process memory (storage type "memory": tests and experiments)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from limen.audit.store import (
    EventPage,
    EventQuery,
    RecordingMeta,
    RegisteredKey,
    StoredEvent,
    stored_event,
)
from limen.backend.events_sql import looks_like_id
from limen.backend.recordings_sql import TAIL
from limen.errors import NotFound


class MemoryEventStore:
    def __init__(self) -> None:
        self._rows: list[tuple[int, StoredEvent]] = []  # (id, event) in insertion order
        self._keys: set[tuple[str, int]] = set()
        self._uids: set[str] = set()
        self._logs: dict[str, str] = {}
        self._vouchers: dict[str, str] = {}
        self._next_id = 1

    async def register_log(self, log_id: str, public_key: str,
                           voucher: str | None = None) -> None:
        self._logs.setdefault(log_id, public_key)
        if voucher is not None:
            self._vouchers.setdefault(log_id, voucher)

    async def log_keys(self) -> dict[str, RegisteredKey]:
        return {log_id: RegisteredKey(key, self._vouchers.get(log_id))
                for log_id, key in self._logs.items()}

    async def insert(self, rows: list[StoredEvent]) -> None:
        for row in rows:
            if (row.log_id, row.seq) in self._keys or row.uid in self._uids:
                continue
            self._keys.add((row.log_id, row.seq))
            self._uids.add(row.uid)
            self._rows.append((self._next_id, row))
            self._next_id += 1

    async def insert_written(self, written: list[tuple[dict[str, Any], str]]) -> None:
        await self.insert([stored_event(record, line) for record, line in written])

    async def last(self, log_id: str) -> StoredEvent | None:
        mine = [r for _, r in self._rows if r.log_id == log_id]
        return max(mine, key=lambda r: r.seq) if mine else None

    async def known_uids(self, uids: Sequence[str]) -> set[str]:
        return {uid for uid in uids if uid in self._uids}

    async def search(self, query: EventQuery) -> EventPage:
        def keep(row_id: int, r: StoredEvent) -> bool:
            node_ok = query.node is None or query.node == (
                r.server_id if looks_like_id(query.node) else r.node
            )
            return (
                (query.since_ns is None or r.time_ns >= query.since_ns)
                and (query.until_ns is None or r.time_ns <= query.until_ns)
                and (not query.types or r.event in query.types)
                and (query.user is None or r.user == query.user)
                and node_ok
                and (query.session is None or r.sid == query.session)
                and (not query.sessions or r.sid in query.sessions)
                and (query.cursor is None or (r.time_ns, row_id) < query.cursor)
            )

        found = sorted(((r.time_ns, i), r) for i, r in self._rows if keep(i, r))
        found.reverse()
        page = found[:query.limit]
        cursor = page[-1][0] if len(found) > query.limit else None
        return EventPage([r for _, r in page], cursor)

    async def chain(self, log_id: str, after_seq: int, limit: int) -> list[StoredEvent]:
        mine = sorted((r for _, r in self._rows if r.log_id == log_id and r.seq > after_seq),
                      key=lambda r: r.seq)
        return mine[:limit]

    async def by_event(self, log_id: str, event: str) -> list[StoredEvent]:
        return sorted((r for _, r in self._rows if r.log_id == log_id and r.event == event),
                      key=lambda r: r.seq)

    async def log_ids(self) -> list[str]:
        return sorted({r.log_id for _, r in self._rows})

    async def count(self) -> int:
        return len(self._rows)

    async def delete_through(self, log_id: str, seq: int) -> int:
        gone = [(i, r) for i, r in self._rows if r.log_id == log_id and r.seq <= seq]
        self._rows = [(i, r) for i, r in self._rows if not (r.log_id == log_id and r.seq <= seq)]
        for _, r in gone:
            self._keys.discard((r.log_id, r.seq))
            self._uids.discard(r.uid)
        return len(gone)


class MemoryRecordingStore:
    def __init__(self) -> None:
        self._meta: dict[str, RecordingMeta] = {}
        self._chunks: dict[str, list[tuple[bytes, str]]] = {}
        self._tails: dict[str, str] = {}

    async def upsert_meta(self, meta: RecordingMeta) -> RecordingMeta:
        size = self._meta[meta.session_id].size if meta.session_id in self._meta else 0
        self._meta[meta.session_id] = dataclasses.replace(meta, size=size)
        return await self.get(meta.session_id)

    async def append(self, session_id: str, offset: int, data: bytes,
                     extract: Callable[[bytes], str]) -> int:
        meta = self._meta.setdefault(session_id, RecordingMeta(session_id))
        size = meta.size
        if offset > size or offset + len(data) <= size:
            return size
        data = data[size - offset:]
        text = self._tails.get(session_id, "") + extract(data).lower()
        self._chunks.setdefault(session_id, []).append((data, text))
        self._tails[session_id] = text[-TAIL:]
        meta.size = size + len(data)
        return meta.size

    async def put_whole(self, whole: Sequence[tuple[RecordingMeta, bytes]],
                        extract: Callable[[bytes], str]) -> list[bool]:
        stored: list[bool] = []
        for meta, data in whole:
            stored.append(meta.session_id not in self._meta)
            if stored[-1]:
                await self.upsert_meta(meta)
                await self.append(meta.session_id, 0, data, extract)
        return stored

    async def get(self, session_id: str) -> RecordingMeta:
        try:
            return dataclasses.replace(self._meta[session_id])
        except KeyError:
            raise NotFound(f"no recording of session {session_id}") from None

    async def list(self, limit: int, since_ns: int | None = None) -> list[RecordingMeta]:
        metas = [m for m in self._meta.values()
                 if since_ns is None or m.end_ns is None or m.end_ns >= since_ns]
        metas.sort(key=lambda m: m.start_ns, reverse=True)
        return [dataclasses.replace(m) for m in metas[:limit]]

    async def read(self, session_id: str) -> AsyncIterator[bytes]:
        for data, _ in list(self._chunks.get(session_id, [])):
            yield data

    async def search_text(self, needle: str, limit: int) -> list[RecordingMeta]:
        needle = needle.lower()
        hits = [sid for sid, parts in self._chunks.items() if any(needle in t for _, t in parts)]
        metas = sorted((self._meta[s] for s in hits), key=lambda m: m.start_ns, reverse=True)
        return [dataclasses.replace(m) for m in metas[:limit]]

    async def delete_ended_before(self, cutoff_ns: int) -> int:
        old = [s for s, m in self._meta.items()
               if (m.end_ns if m.end_ns is not None else m.start_ns) < cutoff_ns]
        for sid in old:
            self._meta.pop(sid, None)
            self._chunks.pop(sid, None)
            self._tails.pop(sid, None)
        return len(old)


class MemoryAuditStore:
    def __init__(self) -> None:
        self.events = MemoryEventStore()
        self.recordings = MemoryRecordingStore()

    async def close(self) -> None:
        return None

"""The audit store behaves the same on memory, SQLite and PostgreSQL: idempotent inserts,
newest-first search by every filter with a cursor, chain reads, retention; recordings
appended by offset (retries and gaps), streamed back, searched by printed text, removed."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import event

from limen.audit.chain import format_time
from limen.audit.store import (
    AuditStore,
    EventQuery,
    RecordingMeta,
    RegisteredKey,
    StoredEvent,
    open_audit_store,
    stored_event,
)
from limen.errors import ConnectionProblem, NotFound
from limen.recording.asciicast import printed_text
from tests.backend.conftest import PG_DSN

NODE_ID = "8f14e45f-ceea-4e7a-a2d8-1b2b3c4d5e6f"


def _event(seq: int, *, log: str = "log1", event: str = "exec", user: str = "alice",
           node: str = "web1", sid: str | None = "s1", time_ns: int | None = None) -> StoredEvent:
    record = {"event": event, "seq": seq, "user": user}
    return StoredEvent(log, seq, f"uid-{log}-{seq}", time_ns if time_ns is not None else seq * 10,
                       event, "T0000I", user, node, NODE_ID, sid, f"{seq:064x}",
                       json.dumps(record))


async def _all(store: AuditStore, **query) -> list[int]:
    seqs, cursor = [], None
    while True:
        page = await store.events.search(EventQuery(limit=2, cursor=cursor, **query))
        seqs += [e.seq for e in page.events]
        cursor = page.cursor
        if cursor is None:
            return seqs


async def test_events_insert_search_and_chain(audit_store: AuditStore) -> None:
    events = audit_store.events
    rows = [_event(1), _event(2, user="bob", event="session.start"), _event(3, node="db1"),
            _event(4, sid="s2"), _event(5, time_ns=20)]  # 5 has the same time as 2
    await events.insert(rows)
    await events.insert(rows[:2])  # a retry adds nothing
    await events.insert([dataclasses.replace(_event(9), uid="uid-log1-1")])
    assert await events.count() == 5  # the same uid is not stored twice
    assert await events.known_uids(["nope", "uid-log1-3"]) == {"uid-log1-3"}
    assert await events.known_uids([]) == set()
    assert (await events.last("log1")).seq == 5

    assert await _all(audit_store) == [4, 3, 5, 2, 1]  # newest first, ties by arrival
    assert await _all(audit_store, user="bob") == [2]
    assert await _all(audit_store, types=("session.start", "exec"), since_ns=20) == [4, 3, 5, 2]
    assert await _all(audit_store, until_ns=20) == [5, 2, 1]
    assert await _all(audit_store, node="db1") == [3]
    assert await _all(audit_store, node=NODE_ID) == [4, 3, 5, 2, 1]
    assert await _all(audit_store, session="s2") == [4]
    assert await _all(audit_store, sessions=("s2", "s9")) == [4]
    assert await _all(audit_store, sessions=("s1", "s2"), types=("exec",)) == [4, 3, 5, 1]
    assert await _all(audit_store, user="nobody") == []

    assert [e.seq for e in await events.chain("log1", 2, 2)] == [3, 4]
    assert [e.seq for e in await events.by_event("log1", "session.start")] == [2]
    assert await events.log_ids() == ["log1"]
    await events.register_log("log1", "key1")
    await events.register_log("log1", "other", "voucher1")  # the first key stays
    await events.register_log("log1", "key1", "voucher2")  # and the first voucher
    await events.register_log("log2", "key2")
    assert await events.log_keys() == {"log1": RegisteredKey("key1", "voucher1"),
                                       "log2": RegisteredKey("key2", None)}
    assert await events.delete_through("log1", 3) == 3
    assert await _all(audit_store) == [4, 5]


async def test_stored_text_and_numbers_come_back_exactly(audit_store: AuditStore) -> None:
    """What a line holds is the audit record: quotes, backslashes, escapes, other scripts
    and the largest times must come back byte for byte, in batches of any size."""
    odd = 'r\u00e9sum\u00e9 "quoted" back\\slash \\u0041 tab\t \u65e5\u672c \U0001f510 \x7f'
    rows = [dataclasses.replace(_event(seq, user=f"{odd}{seq}", sid=None),
                                time_ns=2**62 + seq,
                                data=json.dumps({"user": f"{odd}{seq}"}, ensure_ascii=False))
            for seq in range(1, 2503)]  # more than one batch of the SQL stores
    await audit_store.events.insert(rows)
    back = await audit_store.events.chain("log1", 0, 3000)
    assert back == rows


async def test_written_lines_are_stored_as_the_rows_the_records_make(
    audit_store: AuditStore,
) -> None:
    """``insert_written`` (what the log copies after each write) stores what ``insert`` of
    ``stored_event`` would: SQLite takes the columns and the line from the lines in SQL,
    so each must come back exactly, the line byte for byte."""
    odd = 'r\u00e9sum\u00e9 "quoted" back\\slash \\u0041 tab\t \u65e5 \U0001f510 \x7f \u2028 \x01'
    written = []
    for seq in range(1, 1203):  # more than one batch of the SQL stores
        record = {"event": "exec", "code": "T3002I", "uid": f"uid-{seq}",
                  "time": format_time(1_796_290_200_123_456_789 + seq * 1_000_000_007),
                  "cluster_name": "test.limen", "user": f"{odd}{seq}" if seq % 3 else "",
                  "server_hostname": "web1" if seq % 2 else None, "server_id": NODE_ID,
                  "sid": f"s{seq}", "command": odd, "exit_code": -seq, "big": 2**62 + seq,
                  "log_id": "log1", "seq": seq, "prev_hash": f"{seq - 1:064x}"}
        record = {k: v for k, v in record.items() if v is not None}
        record["hash"] = f"{seq:064x}"
        written.append((record, json.dumps(record, ensure_ascii=False, separators=(",", ":"))))
    await audit_store.events.insert_written(written)
    await audit_store.events.insert_written(written[:5])  # a retry adds nothing
    back = await audit_store.events.chain("log1", 0, 3000)
    assert back == [stored_event(record, line) for record, line in written]
    assert back[2].user is None and back[1].node is None  # empty and missing: no value


async def test_recordings_append_by_offset_and_search_text(audit_store: AuditStore) -> None:
    recs = audit_store.recordings
    sid = "0b5e6a4e-2f1c-4a53-9d0e-6c1f4b2a9e11"
    await recs.upsert_meta(RecordingMeta(sid, user="alice", node="web1", start_ns=100))
    header = b'{"version": 2, "width": 80, "height": 24}\n'
    first = header + b'[0.1, "o", "hello \\u001b[1mwor"]\n'
    second = b'[0.2, "o", "ld\\r\\n"]\n[0.3, "r", "100x30"]\n'
    assert await recs.append(sid, 0, first, printed_text) == len(first)
    assert await recs.append(sid, 0, first, printed_text) == len(first)  # a retry
    assert await recs.append(sid, len(first) + 5, second, printed_text) == len(first)  # a gap
    assert await recs.append(sid, len(first), second, printed_text) == len(first + second)
    chunks = [c async for c in recs.read(sid)]
    assert b"".join(chunks) == first + second

    meta = await recs.get(sid)
    assert (meta.size, meta.user, meta.complete, meta.end_ns) == (len(first + second), "alice",
                                                                   False, None)
    # "world" was cut in two by the chunk boundary (and by an escape sequence).
    assert [m.session_id for m in await recs.search_text("HELLO WORLD", 10)] == [sid]
    assert await recs.search_text("100%", 10) == []  # LIKE wildcards are plain text
    await recs.upsert_meta(RecordingMeta(sid, user="alice", node="web1", start_ns=100,
                                         end_ns=200, complete=True))
    meta = await recs.get(sid)
    assert meta.complete and meta.end_ns == 200 and meta.size == len(first + second)
    assert [m.session_id for m in await recs.list(10)] == [sid]
    assert await recs.list(10, since_ns=300) == []
    assert await recs.delete_ended_before(150) == 0
    assert await recs.delete_ended_before(201) == 1
    try:
        await recs.get(sid)
    except NotFound:
        pass
    else:
        raise AssertionError("the recording should be gone")
    assert [c async for c in recs.read(sid)] == []


async def test_recordings_sent_whole_are_stored_once(audit_store: AuditStore) -> None:
    """put_whole: new recordings, metadata and bytes in one go; one the store has, or a
    repeat within the call, is left as the first made it."""
    recs = audit_store.recordings
    held, new, empty = (f"0b5e6a4e-2f1c-4a53-9d0e-6c1f4b2a9e{n}" for n in (21, 22, 23))
    await recs.upsert_meta(RecordingMeta(held, user="alice", start_ns=1))
    cast = b'{"version": 2}\n[0.1, "o", "whole words"]\n'
    ended = RecordingMeta(new, user="bob", node="web1", start_ns=5, end_ns=9, complete=True)
    stored = await recs.put_whole([
        (RecordingMeta(held, user="mallory", start_ns=2, end_ns=3), b"forged"),
        (ended, cast),
        (RecordingMeta(new, user="again", start_ns=6), b"twice"),
        (RecordingMeta(empty, start_ns=7, end_ns=8, complete=True), b""),
    ], printed_text)
    assert stored == [False, True, False, True]
    assert [c async for c in recs.read(new)] == [cast]
    meta = await recs.get(new)
    assert (meta.user, meta.size, meta.end_ns, meta.complete) == ("bob", len(cast), 9, True)
    assert [m.session_id for m in await recs.search_text("WHOLE WORDS", 10)] == [new]
    assert (await recs.get(held)).user == "alice" and (await recs.get(held)).size == 0
    assert [c async for c in recs.read(held)] == []
    assert (await recs.get(empty)).size == 0 and [c async for c in recs.read(empty)] == []
    assert await recs.put_whole([], printed_text) == []


async def test_sqlite_searches_see_the_writes_and_end_with_the_store(tmp_path: Path) -> None:
    """SQLite's searches run on connections of their own (audit_sqlite_reads): they see
    each committed insert, send nothing but reads, and are closed with the store."""
    store = await open_audit_store("sqlite", tmp_path)
    try:
        await store.events.insert([_event(1)])
        assert await _all(store) == [1]
        await store.events.insert([_event(2, user="bob")])
        assert await _all(store) == [2, 1] and await _all(store, user="bob") == [2]
        reader = store.events._reader  # type: ignore[attr-defined]
        with pytest.raises(ConnectionProblem, match="cannot be read"):
            await reader.rows("DELETE FROM audit_events", ())
        assert await store.events.count() == 2
        # A recording's metadata by id, read for every recording a node sends, goes the
        # same way: nothing through SQLAlchemy's pool.
        sid = "0b5e6a4e-2f1c-4a53-9d0e-6c1f4b2a9e31"
        await store.recordings.upsert_meta(RecordingMeta(sid, user="alice", start_ns=1))
        engine = store.db.engine.sync_engine  # type: ignore[attr-defined]
        sent: list[str] = []
        event.listen(engine, "before_cursor_execute", lambda *args: sent.append(args[2]))
        assert (await store.recordings.get(sid)).user == "alice"
        with pytest.raises(NotFound):
            await store.recordings.get("0b5e6a4e-2f1c-4a53-9d0e-6c1f4b2a9e32")
        assert sent == []
    finally:
        await store.close()
    with pytest.raises(ConnectionProblem, match="closed"):
        await store.events.search(EventQuery(limit=2))
    with pytest.raises(ConnectionProblem, match="closed"):
        await store.recordings.get(sid)


@pytest.mark.postgres
async def test_a_postgres_search_outlives_its_connection(audit_store_pg: AuditStore) -> None:
    """The searches' own pool (audit_reads): a connection the server dropped is replaced
    and the search answered, as the store's other reads survive a database restart."""
    store = audit_store_pg
    await store.events.insert([_event(1), _event(2)])
    assert await _all(store) == [2, 1]
    reader = store.events._reader  # type: ignore[attr-defined]
    for _ in range(3):  # every connection the pool holds
        [(pid,)] = await reader.rows("SELECT pg_backend_pid()", ())
        killer = await asyncpg.connect(PG_DSN)
        try:
            await killer.execute("SELECT pg_terminate_backend($1)", pid)
        finally:
            await killer.close()
        assert await _all(store) == [2, 1]


async def test_search_filters_are_values_not_sql(audit_store: AuditStore) -> None:
    """What a searcher types is bound as a value on every engine (the compiled searches
    are reused): a quote or an SQL fragment matches nothing and changes nothing."""
    await audit_store.events.insert([_event(1), _event(2, user="bob")])
    for sly in ("alice' OR '1'='1", "x'; DELETE FROM audit_events; --", "%", "*"):
        assert await _all(audit_store, user=sly) == []
        assert await _all(audit_store, session=sly, types=(sly, "exec")) == []
    assert await _all(audit_store, user="alice") == [1]
    assert await audit_store.events.count() == 2

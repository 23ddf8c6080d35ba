"""A read on SQLite is one statement: a single SELECT is its own snapshot, so no BEGIN
is sent for it (every statement costs aiosqlite trips to its thread), while writes still
take the write lock up front with BEGIN IMMEDIATE. The frequent reads (get, range) skip
the pool altogether: one trip to a reader thread (limen.backend.sqlite_reads), or for a
point read (get) none, unless SQLite is busy. A write transaction runs whole on the
writer thread (limen.backend.sql_writes): one trip, however many statements."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import Engine, event

from limen.backend import open_backend
from limen.backend.base import Item
from limen.backend.sql import SQLBackend
from limen.backend.sqlite_reads import THREADS, SQLiteReader
from limen.errors import AlreadyExists


def _engines(backend: SQLBackend) -> tuple[Engine, Engine]:
    """The pool's engine (aiosqlite) and the writer thread's (sqlite3): what reaches
    SQLite through SQLAlchemy goes through one of them."""
    return (backend._engine.sync_engine,  # noqa: SLF001 - watching what reaches SQLite
            backend._writes._sync_engine)  # noqa: SLF001


async def test_a_write_begins_immediate_on_the_writer_thread_and_reads_skip_the_pool(
    tmp_path: Path,
) -> None:
    """Every statement of a write transaction, BEGIN IMMEDIATE to COMMIT, runs on the
    writer thread: through aiosqlite they would run on the loop's thread (each then a trip
    to aiosqlite's), in create's case four trips or more."""
    backend = await open_backend("sqlite", path=str(tmp_path / "reads.sqlite"))
    assert isinstance(backend, SQLBackend)
    sent: list[tuple[str, str]] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        word = statement.split()[0].upper() + (" IMMEDIATE" if "IMMEDIATE" in statement
                                               else "")
        sent.append((word, threading.current_thread().name))

    engines = _engines(backend)
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        await backend.put(Item("/a/1", b"one"))
        with pytest.raises(AlreadyExists):
            await backend.create(Item("/a/1", b"again"))
        written, sent[:] = list(sent), []
        assert (await backend.get("/a/1")).value == b"one"
        got, sent[:] = list(sent), []
        assert [i.key for i in await backend.range("/a/")] == ["/a/1"]
        ranged = list(sent)
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)
        await backend.close()
    words = [word for word, _ in written]
    assert words.count("BEGIN IMMEDIATE") == 2 and words[0] == "BEGIN IMMEDIATE"
    assert "INSERT" in words and "SELECT" in words  # put's upsert, create's check
    assert {thread for _, thread in written} == {"limen-sqlite-write_0"}
    assert got == [] and ranged == []  # read through the reader thread, not the pool


async def test_a_read_costs_no_rollback_and_a_failed_write_still_rolls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = await open_backend("sqlite", path=str(tmp_path / "rollbacks.sqlite"))
    assert isinstance(backend, SQLBackend)
    rollbacks: list[bool] = []
    roll_back = aiosqlite.Connection.rollback

    async def counted(self: aiosqlite.Connection) -> None:
        rollbacks.append(self.in_transaction)
        await roll_back(self)

    monkeypatch.setattr(aiosqlite.Connection, "rollback", counted)
    _, writer = _engines(backend)
    written_back: list[bool] = []
    event.listen(writer, "rollback", lambda conn: written_back.append(conn.in_transaction()))
    try:
        await backend.put(Item("/a/1", b"one"))
        assert (await backend.get("/a/1")).value == b"one"
        assert [i.key for i in await backend.range("/a/")] == ["/a/1"]
        assert await backend.sweep() == 0  # its probe: a read through the pool
        assert rollbacks == [] and written_back == []  # nothing to roll back
        with pytest.raises(AlreadyExists):  # fails inside BEGIN IMMEDIATE
            await backend.create(Item("/a/1", b"again"))
        assert written_back == [True] and rollbacks == []
        await backend.put(Item("/a/2", b"two"))  # the write lock was given back
        assert [i.value for i in await backend.range("/a/")] == [b"one", b"two"]
    finally:
        await backend.close()


async def test_a_point_read_is_answered_while_every_reader_thread_is_busy(
    tmp_path: Path,
) -> None:
    """get() reads on the event loop's own thread: threads stuck on long reads do not
    hold it up, while a range read waits for them."""
    backend = await open_backend("sqlite", path=str(tmp_path / "point.sqlite"))
    assert isinstance(backend, SQLBackend)
    release = threading.Event()
    busy = threading.Barrier(THREADS + 1)

    def stuck() -> None:
        busy.wait(timeout=10)
        release.wait(timeout=30)

    threads = backend._direct._threads  # type: ignore[union-attr]  # noqa: SLF001
    try:
        await backend.put(Item("/a/1", b"one"))
        held = [threads.submit(stuck) for _ in range(THREADS)]
        await asyncio.to_thread(busy.wait, 10)  # every reader thread is now held
        ranged = asyncio.ensure_future(backend.range("/a/"))
        assert (await asyncio.wait_for(backend.get("/a/1"), 5)).value == b"one"
        assert not ranged.done()  # it needs a reader thread: none was free
        release.set()
        assert [i.key for i in await asyncio.wait_for(ranged, 10)] == ["/a/1"]
        assert all(f.result(timeout=10) is None for f in held)
    finally:
        release.set()
        await backend.close()


async def test_a_point_read_that_finds_sqlite_busy_waits_on_a_reader_thread(
    tmp_path: Path,
) -> None:
    """The loop's connection never waits on a lock: when another connection holds the
    file (exclusive locking mode), the read is handed to a thread, which waits for the
    lock as every read may, and the loop keeps running meanwhile."""
    path = str(tmp_path / "busy.sqlite")
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode = WAL")
    setup.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)")
    setup.execute("INSERT INTO t VALUES ('a', 'one')")
    setup.close()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("UPDATE t SET v = 'two'")
    holder.execute("COMMIT")  # the lock stays with this connection until it closes
    reader = SQLiteReader(path)
    try:
        read = asyncio.ensure_future(reader.rows("SELECT v FROM t WHERE k = ?", ("a",),
                                                 point=True))
        ticks = 0
        while ticks < 20:  # the loop runs while the read waits on its thread
            await asyncio.sleep(0)
            ticks += 1
        assert not read.done()  # neither answered nor failed: it waits for the lock
        holder.close()
        assert await asyncio.wait_for(read, 10) == [("two",)]
    finally:
        holder.close()
        await reader.close()


async def test_a_delete_of_keys_none_of_which_is_live_sends_no_write(tmp_path: Path) -> None:
    """delete_many reads first (one statement) whether any key is live: a node's batch
    that ends only sessions never listed takes no write lock."""
    backend = await open_backend("sqlite", path=str(tmp_path / "deletes.sqlite"))
    assert isinstance(backend, SQLBackend)
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement.split()[0].upper())

    engines = _engines(backend)
    try:
        await backend.put(Item("/a/1", b"one"))
        for engine in engines:
            event.listen(engine, "before_cursor_execute", record)
        assert await backend.delete_many(["/a/none", "/a/gone", "/a/none"]) == 0
        assert sent == []
        assert await backend.delete_many(["/a/none", "/a/1"]) == 1
        assert sent[0] == "BEGIN" and "DELETE" in sent
        assert await backend.range("/a/") == []
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)
        await backend.close()


async def test_another_process_sees_every_write_after_one_came_and_went(
    tmp_path: Path,
) -> None:
    """The writer thread's engine opens the file after the backend's connections hold
    their locks. Had it opened and closed the file itself (as creating it private does),
    this process's POSIX locks would be gone: the first other process to close the
    database would take itself for its last user and remove the WAL, and writes made
    after that would never reach anyone else."""
    path = tmp_path / "shared.sqlite"
    backend = await open_backend("sqlite", path=str(path))
    count = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
             "print(c.execute('SELECT count(*) FROM kv_items').fetchone()[0]); c.close()")

    async def seen_elsewhere() -> int:
        done = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", count, str(path)],
                                       capture_output=True, text=True, timeout=30, check=True)
        return int(done.stdout)

    try:
        await backend.put(Item("/a/1", b"one"))
        assert await seen_elsewhere() == 1
        await backend.put(Item("/a/2", b"two"))
        assert await seen_elsewhere() == 2
    finally:
        await backend.close()

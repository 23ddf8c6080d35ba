"""A read on SQLite is one statement: a single SELECT is its own snapshot, so no BEGIN
is sent for it (every statement costs aiosqlite trips to its thread), while writes still
take the write lock up front with BEGIN IMMEDIATE. The frequent reads (get, range) skip
the pool altogether: one trip to a reader thread (limen.backend.sqlite_reads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import event

from limen.backend import open_backend
from limen.backend.base import Item
from limen.backend.sql import SQLBackend
from limen.errors import AlreadyExists


async def test_a_write_begins_immediate_and_reads_skip_the_pool(
    tmp_path: Path,
) -> None:
    backend = await open_backend("sqlite", path=str(tmp_path / "reads.sqlite"))
    assert isinstance(backend, SQLBackend)
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement.split()[0].upper() + (" IMMEDIATE" if "IMMEDIATE" in statement
                                                   else ""))

    engine = backend._engine.sync_engine  # noqa: SLF001 - watching what reaches SQLite
    event.listen(engine, "before_cursor_execute", record)
    try:
        await backend.put(Item("/a/1", b"one"))
        written, sent[:] = list(sent), []
        assert (await backend.get("/a/1")).value == b"one"
        got, sent[:] = list(sent), []
        assert [i.key for i in await backend.range("/a/")] == ["/a/1"]
        ranged = list(sent)
    finally:
        event.remove(engine, "before_cursor_execute", record)
        await backend.close()
    assert written[0] == "BEGIN IMMEDIATE"
    assert got == [] and ranged == []  # read through the reader thread, not the pool


async def test_a_read_costs_no_rollback_and_a_failed_write_still_rolls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = await open_backend("sqlite", path=str(tmp_path / "rollbacks.sqlite"))
    rollbacks: list[bool] = []
    roll_back = aiosqlite.Connection.rollback

    async def counted(self: aiosqlite.Connection) -> None:
        rollbacks.append(self.in_transaction)
        await roll_back(self)

    monkeypatch.setattr(aiosqlite.Connection, "rollback", counted)
    try:
        await backend.put(Item("/a/1", b"one"))
        assert (await backend.get("/a/1")).value == b"one"
        assert [i.key for i in await backend.range("/a/")] == ["/a/1"]
        assert rollbacks == []  # reads and a committed write: nothing to roll back
        with pytest.raises(AlreadyExists):  # fails inside BEGIN IMMEDIATE
            await backend.create(Item("/a/1", b"again"))
        assert rollbacks == [True]
        await backend.put(Item("/a/2", b"two"))  # the write lock was given back
        assert [i.value for i in await backend.range("/a/")] == [b"one", b"two"]
    finally:
        await backend.close()

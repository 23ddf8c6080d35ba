"""Serialised write transactions, each one synchronous body run whole.

A write transaction is a function of a SQLAlchemy ``Connection``: it reads what it must,
decides, writes, and returns (or raises, which rolls it back). Where it runs:

- *SQLite:* on a writer thread of its own, through the sqlite3 module, in one trip from
  the event loop and back. Through SQLAlchemy's aiosqlite adapter each statement was
  several trips to aiosqlite's thread (cursor, execute, close; BEGIN and COMMIT too), each
  a wake-up of that thread and then of the loop, about 60 us of CPU apiece: a session
  under `bench/sessions.py` cost the proxy about fifteen of them. The thread is the only
  writer here anyway (SQLite has one write lock), and it never runs on the loop: a
  COMMIT waits for fsync (synchronous=FULL), and BEGIN IMMEDIATE may wait for another
  process's write lock.
- *PostgreSQL:* through asyncpg under ``AsyncConnection.run_sync``: every statement is a
  round trip to the server whichever way it is written, so the body is the same code.

Local writers queue on an asyncio lock, not on the database's lock. A caller cancelled
while its body runs on the thread does not stop it: the transaction commits or fails as
it would have, and the next one starts after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from limen.backend.sql_dialects import (
    WRITE_OPTION,
    Dialect,
    SQLiteDialect,
    connection_problem,
)
from limen.errors import ConnectionProblem

T = TypeVar("T")
Body = Callable[[Connection], T]


class SerialWrites:
    """Write transactions on ``engine``'s database, one at a time from this process.

    ``lock``: begin each with the dialect's ``lock_for_write`` (the backend's writers
    across instances); ``name``: what error messages call the store when it is closed.
    """

    def __init__(self, dialect: Dialect, engine: AsyncEngine, *, lock: bool,
                 name: str) -> None:
        self.dialect = dialect
        self._engine = engine
        self._lock_for_write = lock
        self._name = name
        self._queue = asyncio.Lock()
        self._thread: ThreadPoolExecutor | None = None
        if isinstance(dialect, SQLiteDialect):
            self._sync_engine = dialect.make_sync_engine()
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="limen-sqlite-write")
        self.closed = False

    async def run(self, body: Body[T]) -> T:
        """``body``'s result once its transaction committed; what it raised otherwise
        (rolled back), or ConnectionProblem when the database failed."""
        async with self._queue:
            if self.closed:
                raise ConnectionProblem(f"{self._name} is closed.")
            try:
                if self._thread is not None:
                    loop = asyncio.get_running_loop()
                    return await loop.run_in_executor(self._thread, self._on_thread, body)
                return await self._through_driver(body)
            except (SQLAlchemyError, OSError) as exc:
                raise connection_problem(self.dialect, exc) from exc

    def _on_thread(self, body: Body[T]) -> T:
        with self._sync_engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                return body(conn)

    async def _through_driver(self, body: Body[T]) -> T:
        async with self._engine.connect() as conn:
            await conn.execution_options(**{WRITE_OPTION: True})
            async with conn.begin():
                if self._lock_for_write:
                    await self.dialect.lock_for_write(conn)
                return await conn.run_sync(body)

    async def close(self) -> None:
        """Refuse new transactions; wait for the one under way, then let go of the
        writer thread and its connection (the caller disposes of ``engine``)."""
        async with self._queue:
            self.closed = True
        if self._thread is not None:
            thread, self._thread = self._thread, None
            # Disposed on the thread that made its connection (the sqlite3 module's rule).
            await asyncio.get_running_loop().run_in_executor(thread, self._sync_engine.dispose)
            await asyncio.to_thread(thread.shutdown, wait=True)

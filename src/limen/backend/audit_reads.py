"""Audit searches straight through the database driver, one trip per query.

The SQL is still SQLAlchemy's, compiled once per shape of query (events_sql.py); only
its execution is moved off SQLAlchemy's connection handling, which cost most of a
search's time:

- SQLite: through the aiosqlite adapter a search cost several trips to aiosqlite's
  thread (connect, cursor, execute, fetch, close): a 50-event search took about 1 ms, ten
  times SQLite's own work, with a long tail when the machine was busy. A worker thread
  runs it on a connection of its own (0.25 ms): limen.backend.sqlite_reads, which the
  cluster backend's reads use too.
- PostgreSQL: each checkout pinged the server, and each query ran inside a BEGIN and
  a ROLLBACK: four round trips. Here a small asyncpg pool of its own runs the prepared
  statement alone (one round trip), and a connection that broke (the server restarted)
  is replaced and the query tried once more.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from limen.backend.sql_dialects import CONNECT_TIMEOUT, PostgresDialect
from limen.errors import ConnectionProblem

# What a connection lost under a query raises: the query is worth one more try.
_BROKEN = (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError,
           asyncpg.InternalClientError, OSError)


class PostgresReader:
    def __init__(self, dialect: PostgresDialect) -> None:
        self.dialect = dialect  # its describe() names the store: never the DSN
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self.closed = False

    async def rows(self, sql: str, params: tuple[Any, ...], *,
                   point: bool = False) -> list[tuple[Any, ...]]:
        """The rows of one query; ``point`` (one row by key) changes nothing here: every
        query is already one round trip."""
        for attempt in (1, 2):
            try:
                pool = await self._ready()
                async with pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
                    try:
                        return [tuple(row) for row in await conn.fetch(sql, *params)]
                    except _BROKEN:
                        conn.terminate()  # so that the pool opens a new one
                        raise
            except _BROKEN as exc:
                if attempt == 2 or self.closed:
                    raise self._problem(exc) from exc
            except (asyncpg.PostgresError, TimeoutError) as exc:
                raise self._problem(exc) from exc
        raise AssertionError("unreachable")

    def _problem(self, exc: BaseException) -> ConnectionProblem:
        if self.closed:
            return ConnectionProblem("the audit store is closed")
        return ConnectionProblem(f"The audit store ({self.dialect.describe()}) cannot be read: "
                                 f"{type(exc).__name__}")

    async def _ready(self) -> asyncpg.Pool:
        if self.closed:
            raise ConnectionProblem("the audit store is closed")
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self.dialect.driver_dsn(), min_size=1, max_size=4,
                    timeout=CONNECT_TIMEOUT, server_settings=self.dialect.server_settings())
        return self._pool

    async def close(self) -> None:
        self.closed = True
        async with self._opening:
            if self._pool is not None:
                await self._pool.close()
                self._pool = None

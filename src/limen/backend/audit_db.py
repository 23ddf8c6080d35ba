"""The audit store's engine: read transactions and serialised write transactions, with
driver errors turned into ConnectionProblem the same way the cluster backend does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from limen.backend.sql_dialects import WRITE_OPTION, Dialect, connection_problem
from limen.errors import ConnectionProblem


class Database:
    """An engine with read and serialised write transactions."""

    def __init__(self, dialect: Dialect, engine: AsyncEngine) -> None:
        self.dialect = dialect
        self.engine = engine
        # SQLite has one writer at a time anyway; queueing here, not on its busy
        # timeout, keeps local writers fair.
        self._write_lock = asyncio.Lock()
        self.closed = False

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        if self.closed:
            raise ConnectionProblem("the audit store is closed")
        try:
            async with self.engine.connect() as conn:
                yield conn
        except (SQLAlchemyError, OSError) as exc:
            raise connection_problem(self.dialect, exc) from exc

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        if self.closed:
            raise ConnectionProblem("the audit store is closed")
        async with self._write_lock:
            try:
                async with self.engine.connect() as conn:
                    await conn.execution_options(**{WRITE_OPTION: True})
                    async with conn.begin():
                        yield conn
            except (SQLAlchemyError, OSError) as exc:
                raise connection_problem(self.dialect, exc) from exc

    async def close(self) -> None:
        self.closed = True
        await self.engine.dispose()

"""The audit store's engine: read transactions and serialised write transactions, with
driver errors turned into ConnectionProblem the same way the cluster backend does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from limen.backend.sql_dialects import Dialect, connection_problem
from limen.backend.sql_writes import Body, SerialWrites, T
from limen.errors import ConnectionProblem


class Database:
    """An engine with read transactions and serialised write transactions."""

    def __init__(self, dialect: Dialect, engine: AsyncEngine) -> None:
        self.dialect = dialect
        self.engine = engine
        self._writes = SerialWrites(dialect, engine, lock=False, name="The audit store")
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

    async def transact(self, body: Body[T]) -> T:
        """``body`` run whole as one write transaction (limen.backend.sql_writes)."""
        if self.closed:
            raise ConnectionProblem("the audit store is closed")
        return await self._writes.run(body)

    async def close(self) -> None:
        self.closed = True
        await self._writes.close()
        await self.engine.dispose()

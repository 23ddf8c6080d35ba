"""Storage: the only place in Limen that knows about databases.

Open a store with ``open_backend`` and close it when done::

    backend = await open_backend("sqlite", path="/var/lib/limen/backend.db")
    try:
        await backend.put(Item("/users/alice", b"..."))
    finally:
        await backend.close()

Everything above this package talks to the ``Backend`` protocol (base.py) and never
writes SQL.
"""

from __future__ import annotations

from limen.backend.base import (
    DEFAULT_SWEEP_INTERVAL,
    Backend,
    Event,
    Item,
    OpType,
)
from limen.backend.memory import MemoryBackend
from limen.backend.sql import SQLBackend
from limen.backend.sql_dialects import PostgresDialect, SQLiteDialect
from limen.backend.watch import Watcher
from limen.clock import Clock
from limen.errors import BadParameter

__all__ = [
    "Backend",
    "Event",
    "Item",
    "MemoryBackend",
    "OpType",
    "SQLBackend",
    "Watcher",
    "open_backend",
]

KINDS = ("memory", "sqlite", "postgres")


async def open_backend(
    kind: str,
    *,
    path: str | None = None,
    dsn: str | None = None,
    schema: str | None = None,
    clock: Clock | None = None,
    sweep_interval: float | None = DEFAULT_SWEEP_INTERVAL,
) -> Backend:
    """Open a ready-to-use backend and start its background sweeper.

    - ``"memory"``: in-process, nothing persists.
    - ``"sqlite"``: ``path`` is the database file (created with mode 0600 if missing).
    - ``"postgres"``: ``dsn`` like ``postgresql://user@127.0.0.1:5432/limen``; ``schema``,
      if given, is created when missing and used for every table.

    ``sweep_interval`` is how often expired items are removed (and their DELETE events
    sent); None starts no sweeper, leaving it to explicit ``sweep()`` calls (tests).
    The caller owns the backend and must ``await backend.close()``.

    Raises BadParameter for an unknown kind or missing/malformed arguments, and
    ConnectionProblem if the database cannot be opened or reached.
    """
    if sweep_interval is not None and sweep_interval <= 0:
        raise BadParameter("The sweep interval must be positive (or None for no sweeper).")
    if kind == "memory":
        memory = MemoryBackend(clock=clock)
        memory.start(sweep_interval)
        return memory
    if kind == "sqlite":
        if not path:
            raise BadParameter("The sqlite backend needs the path of its database file.")
        sql = await SQLBackend.open(SQLiteDialect(path), clock=clock)
    elif kind == "postgres":
        if not dsn:
            raise BadParameter("The postgres backend needs a DSN (postgresql://...).")
        sql = await SQLBackend.open(PostgresDialect(dsn, schema), clock=clock)
    else:
        raise BadParameter(f"Unknown backend kind {kind!r}; expected one of: {', '.join(KINDS)}.")
    sql.start(sweep_interval)
    return sql

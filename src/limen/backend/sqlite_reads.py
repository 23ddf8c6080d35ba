"""Reads from an SQLite file straight through the sqlite3 module, one trip per query.

Through SQLAlchemy's aiosqlite adapter a read is several trips to aiosqlite's thread
(check out, cursor, execute, fetch, close, reset), each a wake-up of the event loop
through its self-pipe: a one-row read by key cost about 750 us of CPU, where SQLite's
own work is a few microseconds. Here one worker thread runs the whole query on a
connection of its own (about 100 us in all). Connections are per thread (the sqlite3
module's objects belong to the thread that made them) and query only; in WAL mode a
reader never blocks the writer, and each query sees every transaction committed
before it started. The threads are the reader's own, so that work queued on asyncio's
default executor (password hashing, fsyncs) never delays a read.

A point read (rows by their keys: the backend's ``get``, and its check of a few keys
before ``delete_many``) runs on the caller's own thread instead. SQLite answers it from
the page cache in tens of microseconds, where the trip to a worker and back costs more:
waking the thread, its turn at the GIL, waking the event loop. Under
`bench/sessions.py` the proxy makes about ten such reads per session (the user, their
roles, the node, its presence, the caller's API session), and their trips took about 8%
of its CPU. That connection never waits on a lock: if SQLite says it is busy (a crashed
writer's recovery, a connection holding the file in exclusive mode), the read goes to a
worker, which waits as every other read does.

The SQL is SQLAlchemy's, compiled once per shape by the caller (``compile_once``).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from limen.backend.sql_dialects import CONNECT_TIMEOUT
from limen.errors import ConnectionProblem

THREADS = 4
# What a point read on the caller's thread hands to a worker instead of waiting for.
_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


class CompiledSQL(NamedTuple):
    """A statement's SQL for one dialect, with its parameters' names in the order the
    driver takes them and the values compiled in for those a caller does not give
    (SQLite's LIMIT comes with an OFFSET of 0)."""

    sql: str
    order: list[tuple[str, Any]]

    def params(self, values: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(values.get(name, default) for name, default in self.order)


def compile_once(stmt: Any, dialect: Any) -> CompiledSQL:
    compiled = stmt.compile(dialect=dialect)
    return CompiledSQL(str(compiled), [(name, compiled.params.get(name))
                                       for name in compiled.positiontup or ()])


class SQLiteReader:
    def __init__(self, path: str, name: str = "the audit store") -> None:
        self.path = path
        # What errors call it, as a sentence starts: "The audit store", "The storage backend".
        self.name = name[:1].upper() + name[1:]
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._threads = ThreadPoolExecutor(THREADS, thread_name_prefix="limen-sqlite-read")
        self.closed = False

    async def rows(self, sql: str, params: tuple[Any, ...], *,
                   point: bool = False) -> list[tuple[Any, ...]]:
        """The rows of one query; ``point`` says it reads rows by their keys (module doc)."""
        if self.closed:
            raise ConnectionProblem(f"{self.name} is closed.")
        try:
            if point:
                found = self._read_here(sql, params)
                if found is not None:
                    return found
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._threads, self._run, sql, params)
        except sqlite3.Error as exc:
            raise ConnectionProblem(f"{self.name} ({self.path}) cannot be read: {exc}") \
                from exc
        except RuntimeError as exc:  # the executor was shut down under the query
            raise ConnectionProblem(f"{self.name} is closed.") from exc

    def _read_here(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]] | None:
        """The rows, read on this thread; None if SQLite is busy (a worker waits then)."""
        try:
            return self._connection(wait=False).execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            code = getattr(exc, "sqlite_errorcode", 0)  # SQLite's, when SQLite raised it
            if code & 0xFF in _BUSY:  # the primary code of an extended one
                return None
            raise

    def _run(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self._connection(wait=True).execute(sql, params).fetchall()

    def _connection(self, wait: bool) -> sqlite3.Connection:
        """This thread's connection: one that waits on SQLite's locks (a worker's), or one
        that never does (the event loop's, for point reads)."""
        attr = "waiting" if wait else "prompt"
        conn: sqlite3.Connection | None = getattr(self._local, attr, None)
        if conn is None:
            # check_same_thread off only so that close() may close it from the loop's
            # thread; it is used by the thread that made it.
            conn = sqlite3.connect(self.path, timeout=CONNECT_TIMEOUT if wait else 0,
                                   isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA query_only = ON")
            with self._lock:
                if self.closed:
                    conn.close()
                    raise sqlite3.OperationalError("closed")
                self._opened.append(conn)
            setattr(self._local, attr, conn)
        return conn

    async def close(self) -> None:
        with self._lock:
            self.closed = True
            opened, self._opened = self._opened, []
        # Queries under way finish first: a connection is not closed under its thread.
        await asyncio.to_thread(self._threads.shutdown, wait=True, cancel_futures=True)
        for conn in opened:
            conn.close()

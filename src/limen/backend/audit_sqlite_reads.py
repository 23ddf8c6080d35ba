"""Audit searches on SQLite through the sqlite3 module in a worker thread.

Through SQLAlchemy's aiosqlite adapter a search costs several trips to aiosqlite's
thread (connect, cursor, execute, fetch, close) and a 50-event search took about 1 ms,
ten times SQLite's own work, with a long tail when the machine was busy. Here a query
is one trip: a worker thread runs it on a connection of its own and hands back the rows
(0.25 ms). The SQL is still SQLAlchemy's, compiled once per shape of query
(events_sql.py); only its execution is moved. Connections are per thread (the sqlite3
module's objects belong to the thread that made them), read only in intent: nothing but
SELECTs is sent, and in WAL mode a reader never blocks the writer.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from typing import Any

from limen.backend.sql_dialects import CONNECT_TIMEOUT
from limen.errors import ConnectionProblem


class SQLiteReader:
    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.closed = False

    async def rows(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if self.closed:
            raise ConnectionProblem("the audit store is closed")
        try:
            return await asyncio.to_thread(self._run, sql, params)
        except sqlite3.Error as exc:
            raise ConnectionProblem(f"The audit store ({self.path}) cannot be read: {exc}") \
                from exc

    def _run(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self._connection().execute(sql, params).fetchall()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # check_same_thread off only so that close() may close it from the loop's
            # thread; it is used by the thread that made it.
            conn = sqlite3.connect(self.path, timeout=CONNECT_TIMEOUT, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA query_only = ON")
            with self._lock:
                if self.closed:
                    conn.close()
                    raise sqlite3.OperationalError("closed")
                self._opened.append(conn)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        with self._lock:
            self.closed = True
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()

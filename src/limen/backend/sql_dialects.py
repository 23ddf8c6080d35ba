"""The engine-specific bits of the SQL backend, kept small and apart from its logic.

Each dialect answers four questions for ``limen.backend.sql``:

- how to build the SQLAlchemy engine (URL, connection settings, pragmas);
- how to prepare the database before the tables are created (schema, migration lock);
- how to serialise write transactions, so change ids are handed out in commit order
  (the watch poller relies on that to never miss a change, see sql.py);
- which INSERT construct offers ON CONFLICT (both engines spell it the same way).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from sqlalchemy import Engine, MetaData, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from limen.errors import BadParameter, ConnectionProblem

log = logging.getLogger(__name__)

#: Execution option that marks a connection's transaction as a write (see SQLite BEGIN).
WRITE_OPTION = "limen_write"
#: Execution option of a connection that runs one SELECT and nothing else: SQLite gives
#: a single statement its own consistent snapshot, so no BEGIN is sent for it (each
#: statement sent costs aiosqlite three trips to its thread: a third of a key lookup).
SINGLE_READ_OPTION = "limen_single_read"

#: Seconds to wait for a connection or for another writer's lock before giving up.
CONNECT_TIMEOUT = 10.0


class Dialect(Protocol):
    name: str

    def make_engine(self) -> AsyncEngine: ...

    async def prepare(self, conn: AsyncConnection) -> None:
        """Run in the migration transaction before the tables are created."""
        ...

    async def lock_for_write(self, conn: AsyncConnection) -> None:
        """Run first in every write transaction; held until it ends."""
        ...

    def insert(self, table: Any) -> Any:
        """An INSERT construct supporting ``on_conflict_do_update``."""
        ...

    def describe(self) -> str:
        """Where the database is, for error messages (never with a password)."""
        ...


def connection_problem(dialect: Dialect, exc: BaseException) -> ConnectionProblem:
    """Translate a driver or SQLAlchemy error into a sentence without secrets.

    SQLAlchemy's own message embeds the SQL and its parameters (which may be stored
    secrets), so only the driver's first line is kept.
    """
    cause: BaseException = exc
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        cause = exc.orig
    reason = (str(cause).strip().splitlines() or [""])[0][:200]
    kind = type(cause).__name__
    detail = f"{kind}: {reason}" if reason else kind
    return ConnectionProblem(f"The {dialect.describe()} failed or could not be reached ({detail}).")


# ---------------------------------------------------------------------------------------
# SQLite


class SQLiteDialect:
    """An SQLite file in WAL mode, private to its owner (mode 0600: it holds secrets)."""

    name = "sqlite"

    def __init__(self, path: str) -> None:
        if not path or path == ":memory:" or path.startswith("file:"):
            raise BadParameter(
                "The SQLite backend needs the path of a database file "
                "(use kind 'memory' for an in-process store)."
            )
        self.path = os.path.abspath(path)

    def describe(self) -> str:
        return f"SQLite database {self.path}"

    def make_engine(self) -> AsyncEngine:
        _ensure_private_file(self.path)
        engine = create_async_engine(URL.create("sqlite+aiosqlite", database=self.path))
        _configure_sqlite(engine.sync_engine)
        return engine

    def make_sync_engine(self) -> Engine:
        """The same database through the sqlite3 module itself, for a thread of its own
        (limen.backend.sql_writes runs each write transaction whole on one). Made after
        ``make_engine``, which created the file: opening and closing it here again would
        drop every POSIX lock this process's connections hold on it (fcntl locks belong
        to the process, and any close releases them), and another process would then
        take the database for unused and remove its WAL under us."""
        engine = create_engine(URL.create("sqlite+pysqlite", database=self.path))
        _configure_sqlite(engine)
        return engine

    async def prepare(self, conn: AsyncConnection) -> None:
        return None

    async def lock_for_write(self, conn: AsyncConnection) -> None:
        # BEGIN IMMEDIATE already holds the database's single write lock.
        return None

    def insert(self, table: Any) -> Any:
        return sqlite.insert(table)


_UPSERTS: dict[tuple[str, str], Any] = {}  # (dialect, table) -> the statement


def upsert(dialect: Dialect, table: Any, key: Any, fields: Sequence[str]) -> Any:
    """INSERT ... ON CONFLICT (key) DO UPDATE SET fields, executed with the values as
    parameters and built once per dialect and table: a statement built around its values
    makes SQLAlchemy derive a new cache key from every value, at each write (about 0.5 ms
    of a write's 2 ms of CPU)."""
    found = _UPSERTS.get((type(dialect).__name__, table.name))
    if found is None:
        stmt = dialect.insert(table)
        found = _UPSERTS[(type(dialect).__name__, table.name)] = stmt.on_conflict_do_update(
            index_elements=[key], set_={field: stmt.excluded[field] for field in fields})
    return found


def _configure_sqlite(engine: Engine) -> None:
    """Every SQLite connection's settings, and who begins its transactions."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 module (it would skip it for SELECTs and
        # defer the write lock), and issue it ourselves in _on_begin.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(CONNECT_TIMEOUT * 1000)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            # FULL: a change we acknowledged (a lock, a revoked token) survives power loss.
            cursor.execute("PRAGMA synchronous = FULL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take SQLite's write lock up front (IMMEDIATE), so a transaction
        # never fails half-way trying to upgrade a read lock; readers stay deferred
        # and, in WAL mode, never block writers.
        options = conn.get_execution_options()
        if options.get(WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif not options.get(SINGLE_READ_OPTION):
            conn.exec_driver_sql("BEGIN")

    _skip_idle_rollbacks(engine.dialect)


def _skip_idle_rollbacks(dialect: Any) -> None:
    """Roll back only a connection that holds a transaction. SQLAlchemy ends every
    connection it used with a rollback, and a single read (SINGLE_READ_OPTION) never
    began one: SQLite would do nothing, but aiosqlite still sends the call to its thread
    and back, a fifth of a key lookup's cost. ``in_transaction`` is read on this side."""
    roll_back = dialect.do_rollback

    def do_rollback(dbapi_connection: Any) -> None:
        if dbapi_connection.driver_connection.in_transaction:
            roll_back(dbapi_connection)

    dialect.do_rollback = do_rollback


def _ensure_private_file(path: str) -> None:
    """Create the database file with mode 0600 before SQLite does (it would use 0644).

    SQLite gives its -wal and -shm files the main file's mode, so those stay private too.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConnectionProblem(
            f"Cannot open the SQLite database {path}: {exc.strerror or exc}."
        ) from exc
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != 0o600:
            try:
                os.fchmod(fd, 0o600)
            except OSError as exc:
                log.warning("Cannot make %s private (mode 0600): %s", path, exc.strerror)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------
# PostgreSQL

_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _lock_key(tag: str, schema: str) -> int:
    """A stable signed 64-bit advisory lock key, one per purpose and schema.

    Advisory locks are database-wide, so the schema is part of the key: instances using
    different schemas never wait for each other.
    """
    digest = hashlib.sha256(f"limen-backend:{tag}:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresDialect:
    """PostgreSQL through asyncpg, optionally confined to one schema."""

    name = "postgresql"

    def __init__(self, dsn: str, schema: str | None = None) -> None:
        try:
            url = make_url(dsn)
        except (ArgumentError, ValueError) as exc:
            # Not echoing the DSN: it may carry a password.
            raise BadParameter("The PostgreSQL DSN is malformed.") from exc
        if url.get_backend_name() not in ("postgresql", "postgres"):
            raise BadParameter("The PostgreSQL DSN must start with postgresql://.")
        if schema is not None and not _SCHEMA_NAME.match(schema):
            raise BadParameter(
                "A PostgreSQL schema name must be letters, digits and underscores "
                "(at most 63, not starting with a digit)."
            )
        self.url = url.set(drivername="postgresql+asyncpg")
        self.schema = schema
        self._write_key = _lock_key("write", schema or "")
        self._migrate_key = _lock_key("migrate", schema or "")

    def describe(self) -> str:
        where = f"{self.url.host or 'localhost'}:{self.url.port or 5432}/{self.url.database or ''}"
        if self.schema:
            where += f" (schema {self.schema})"
        return f"PostgreSQL database at {where}"

    def server_settings(self) -> dict[str, str]:
        """What every connection sets: its name and, with a schema, that schema alone."""
        settings = {"application_name": "limen"}
        if self.schema:
            # Every connection works inside the schema, so the SQL stays schema-free.
            settings["search_path"] = self.schema
        return settings

    def driver_dsn(self) -> str:
        """The DSN as asyncpg itself takes it (postgresql://...)."""
        return self.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def make_engine(self) -> AsyncEngine:
        server_settings = self.server_settings()
        return create_async_engine(
            self.url,
            pool_pre_ping=True,  # survive a database restart without failing a request
            # Each statement must see the latest commit: a write reads the current row
            # only after taking the write lock, which a transaction-wide snapshot
            # (REPEATABLE READ as a server default) would make stale.
            isolation_level="READ COMMITTED",
            connect_args={"timeout": CONNECT_TIMEOUT, "server_settings": server_settings},
        )

    async def prepare(self, conn: AsyncConnection) -> None:
        # Instances starting together would race on CREATE SCHEMA/TABLE IF NOT EXISTS
        # (both can fail on the catalogs' unique indexes); one at a time.
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": self._migrate_key})
        if self.schema and not await self._schema_exists(conn):
            # Only when missing: CREATE SCHEMA IF NOT EXISTS still needs the right to
            # create schemas in the database, which a role given just its schema lacks.
            await conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))

    async def _schema_exists(self, conn: AsyncConnection) -> bool:
        found = await conn.execute(text("SELECT 1 FROM pg_namespace WHERE nspname = :s"),
                                   {"s": self.schema})
        return found.first() is not None

    async def lock_for_write(self, conn: AsyncConnection) -> None:
        # One writer at a time across every instance sharing this schema: change ids then
        # become visible in id order, which the watch poller relies on. Writes here are
        # small and rare (configuration, not data), so this costs little.
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": self._write_key})

    def insert(self, table: Any) -> Any:
        return postgresql.insert(table)


async def open_engine(
    dialect: Dialect, tables: MetaData, configure: Callable[[AsyncEngine], None] | None = None
) -> AsyncEngine:
    """An engine with the dialect prepared and `tables` created; disposed if that fails."""
    engine = dialect.make_engine()
    if configure is not None:
        configure(engine)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(**{WRITE_OPTION: True})
            async with conn.begin():
                await dialect.prepare(conn)
                await conn.run_sync(tables.create_all)
    except (SQLAlchemyError, OSError) as exc:
        await engine.dispose()
        raise connection_problem(dialect, exc) from exc
    except BaseException:
        await engine.dispose()
        raise
    return engine

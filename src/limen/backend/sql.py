"""One Backend for SQLite and PostgreSQL, on SQLAlchemy's async Core.

Engine differences live in sql_dialects.py; the tables and the statements of a write
transaction in sql_tables.py; where a write transaction runs (whole, on SQLite's writer
thread) in sql_writes.py. Tables:

- ``kv_items``: the live data (key, value, expires as epoch microseconds, revision).
- ``kv_changes``: one row per change, with an increasing id, written in the same
  transaction as the change itself. Watchers are fed from it, so they see changes made
  by every process sharing the database, not only this one.

Writes are serialised (SQLite's write lock taken at BEGIN IMMEDIATE; a PostgreSQL
advisory lock per schema), which gives two properties the rest relies on: a write can
read, decide and write without races (create, update, compare-and-swap are atomic across
tasks, connections and instances), and change ids become visible in id order, so a
poller that remembers the last id it read never skips a change.

Watch: one poller task per Backend reads ``kv_changes`` after its cursor and hands each
row to the matching watchers. It wakes on every local commit, and otherwise every
``poll_interval`` seconds to pick up other instances' changes. A failed read (a dropped
connection, the database restarting) keeps the cursor and is retried, so watchers resume
without a gap or a repeat; only an outage longer than half of ``change_retention``
closes them with an error. It only runs while
someone watches. Change rows older than ``change_retention`` seconds are pruned by the
sweeper (the newest is always kept, so ids keep increasing).

Expiry compares ``expires`` with the injected clock's time, passed as a parameter, never
the database's clock, so a FakeClock controls it in tests.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

from sqlalchemy import bindparam, delete, func, or_, select
from sqlalchemy.exc import ProgrammingError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from limen.backend.base import (
    Event,
    Item,
    OpType,
    check_item,
    check_items,
    check_key,
    check_limit,
    check_prefix,
    from_micros,
    is_expired,
    prefix_end,
    sweep_forever,
    to_micros,
)
from limen.backend.sql_dialects import (
    SINGLE_READ_OPTION,
    Dialect,
    SQLiteDialect,
    connection_problem,
    open_engine,
)
from limen.backend.sql_tables import (
    ITEM_COLUMNS,
    WriteTx,
    changes,
    items,
    metadata,
    row_item,
    wall_micros,
)
from limen.backend.sql_writes import SerialWrites
from limen.backend.sqlite_reads import CompiledSQL, SQLiteReader, compile_once
from limen.backend.watch import DEFAULT_WATCH_CAPACITY, Watcher, WatcherGroups
from limen.clock import Clock, RealClock
from limen.errors import (
    AlreadyExists,
    BadParameter,
    CompareFailed,
    ConnectionProblem,
    LimenError,
    NotFound,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_POLL_INTERVAL = 0.1
DEFAULT_CHANGE_RETENTION = 300.0
_PRUNE_EVERY = 30.0  # seconds between prunes of kv_changes
_POLL_BATCH = 500  # change rows read per query

# The reads every request makes, as statements with named parameters (compiled once).
_GET = select(*ITEM_COLUMNS).where(items.c.key == bindparam("key"))
_NEWEST = select(func.max(changes.c.id))
_POLL = (
    select(changes.c.id, changes.c.op, changes.c.key, changes.c.value, changes.c.expires,
           changes.c.revision)
    .where(changes.c.id > bindparam("cursor"))
    .order_by(changes.c.id)
    .limit(_POLL_BATCH)
)


# An item no expiry has ended at the bound time "now" (epoch microseconds).
_LIVE = or_(items.c.expires.is_(None), items.c.expires > bindparam("now"))
# delete_many reads first whether any of this many keys is live (a node's batch ends a
# few sessions; more keys would mean more compiled shapes).
_FEW_KEYS = 16


@functools.cache
def _live_keys_select(count: int) -> Any:
    """Which of ``count`` keys (bound as key0, key1, ...) hold a live item."""
    wanted = [bindparam(f"key{at}") for at in range(count)]
    return select(items.c.key).where(items.c.key.in_(wanted), _LIVE)


# Built once per shape: building the statement on every call was a tenth of the CPU of
# an API request that lists a few items (each node request reads the locks).
@functools.cache
def _range_select(start: bool, end: bool, limit: bool) -> Any:
    """Live items in ``start <= key < end`` (an index range scan, unlike LIKE)."""
    stmt = select(*ITEM_COLUMNS)
    if start:
        stmt = stmt.where(items.c.key >= bindparam("start"))
    if end:
        stmt = stmt.where(items.c.key < bindparam("end"))
    stmt = stmt.where(_LIVE).order_by(items.c.key)
    return stmt.limit(bindparam("limit")) if limit else stmt


def _remove_expired(tx: WriteTx) -> list[str]:
    """The sweeper's transaction: every item expired by the transaction's time."""
    stmt = select(items.c.key).where(items.c.expires <= to_micros(tx.now)).order_by(items.c.key)
    keys = list(tx.conn.execute(stmt).scalars())
    tx.remove(keys)
    return keys


class SQLBackend:
    """The Backend on an SQL database. Build it with ``await SQLBackend.open(dialect)``."""

    def __init__(
        self,
        dialect: Dialect,
        engine: AsyncEngine,
        *,
        clock: Clock | None = None,
        watch_capacity: int = DEFAULT_WATCH_CAPACITY,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        change_retention: float = DEFAULT_CHANGE_RETENTION,
    ) -> None:
        self.dialect = dialect
        self.clock = clock or RealClock()
        #: Buffer size of watchers created from now on (see limen.backend.watch).
        self.watch_capacity = watch_capacity
        self._engine = engine
        # The same pool; its connections run one SELECT each (see SINGLE_READ_OPTION).
        self._reader = engine.execution_options(**{SINGLE_READ_OPTION: True})
        # On SQLite the frequent reads (get, range, the change poll) skip the pool: one
        # trip to a reader thread each (limen.backend.sqlite_reads), SQL compiled once.
        self._direct = (SQLiteReader(dialect.path, "the storage backend")
                        if isinstance(dialect, SQLiteDialect) else None)
        self._compiled: dict[tuple[Any, ...], CompiledSQL] = {}
        self._poll_interval = poll_interval
        #: Seconds a change row is kept for watchers that are behind (wall clock).
        self.change_retention = change_retention
        self._writes = SerialWrites(dialect, engine, lock=True, name="The storage backend")
        self._poll_lock = asyncio.Lock()  # attaching a watcher vs. a poll in progress
        self._watchers = WatcherGroups()  # each with the last change id before it
        self._cursor = 0  # last change id handed to watchers
        self._wake = asyncio.Event()
        self._have_watchers = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._last_prune = time.monotonic()
        self._closed = False

    @classmethod
    async def open(cls, dialect: Dialect, **kwargs: Any) -> SQLBackend:
        """Connect, create the tables if needed, and return a ready backend."""
        return cls(dialect, await open_engine(dialect, metadata), **kwargs)

    def start(self, sweep_interval: float | None) -> None:
        """Start the background sweeper (None: only explicit ``sweep()`` calls)."""
        if sweep_interval is not None and self._sweeper is None:
            self._sweeper = asyncio.create_task(
                sweep_forever(self, sweep_interval), name="limen-sql-sweeper"
            )

    # -- transactions -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionProblem("The storage backend is closed.")

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for one SELECT (every caller runs exactly one)."""
        self._check_open()
        try:
            async with self._reader.connect() as conn:
                yield conn
        except (SQLAlchemyError, OSError) as exc:
            raise connection_problem(self.dialect, exc) from exc

    async def _transact(self, body: Callable[[WriteTx], T]) -> T:
        """``body``'s result, run whole as one write transaction (sql_writes)."""
        self._check_open()
        now = self.clock.now()
        result = await self._writes.run(lambda conn: body(WriteTx(conn, self.dialect, now)))
        self._wake.set()  # committed: let the local poller deliver it now
        return result

    # -- Backend ------------------------------------------------------------------------

    async def _select(self, stmt: Any, values: dict[str, Any],
                      shape: tuple[Any, ...], point: bool = False) -> list[Any]:
        """The rows of one SELECT whose SQL depends on ``shape`` alone; ``point``: it
        reads one row by key (SQLiteReader.rows says what that changes)."""
        if self._direct is None:
            async with self._read() as conn:
                return list((await conn.execute(stmt, values)).all())
        self._check_open()
        found = self._compiled.get(shape)
        if found is None:
            found = self._compiled[shape] = compile_once(stmt, self._engine.dialect)
        return await self._direct.rows(found.sql, found.params(values), point=point)

    async def get(self, key: str) -> Item:
        key = check_key(key)
        rows = await self._select(_GET, {"key": key}, ("get",), point=True)
        item = row_item(rows[0]) if rows else None
        if item is None or is_expired(item.expires, self.clock.now()):
            raise NotFound(f"Key {key!r} is not found.")
        return item

    async def put(self, item: Item) -> Item:
        item = check_item(item)
        return await self._transact(lambda tx: tx.store(item))

    async def put_many(self, items: Sequence[Item]) -> list[Item]:
        checked = check_items(items)
        if not checked:
            return []
        return await self._transact(lambda tx: tx.store_many(checked))

    async def create(self, item: Item) -> Item:
        item = check_item(item)

        def body(tx: WriteTx) -> Item:
            if tx.current(item.key) is not None:
                raise AlreadyExists(f"Key {item.key!r} already exists.")
            return tx.store(item)
        return await self._transact(body)

    async def update(self, item: Item) -> Item:
        item = check_item(item)

        def body(tx: WriteTx) -> Item:
            if tx.current(item.key) is None:
                raise NotFound(f"Key {item.key!r} is not found.")
            return tx.store(item)
        return await self._transact(body)

    async def compare_and_swap(self, expected: Item, new: Item) -> Item:
        expected, new = check_item(expected), check_item(new)
        if expected.key != new.key:
            raise BadParameter("compare_and_swap needs the expected and new items to share a key.")

        def body(tx: WriteTx) -> Item:
            current = tx.current(new.key)
            if current is None or current.value != expected.value:
                raise CompareFailed(f"Key {new.key!r} changed or is gone; read it again and retry.")
            return tx.store(new)
        return await self._transact(body)

    async def delete(self, key: str) -> None:
        key = check_key(key)

        def body(tx: WriteTx) -> None:
            if tx.current(key) is None:
                raise NotFound(f"Key {key!r} is not found.")
            tx.remove([key])
        await self._transact(body)

    async def delete_many(self, keys: Sequence[str]) -> int:
        wanted = list(dict.fromkeys(map(check_key, keys)))
        if not wanted:
            return 0
        if len(wanted) <= _FEW_KEYS and not await self._any_live(wanted):
            return 0  # nothing to remove: no write transaction, no wait for the write lock

        def body(tx: WriteTx) -> int:
            live = tx.live_among(wanted)
            tx.remove(live)
            return len(live)
        return await self._transact(body)

    async def _any_live(self, keys: list[str]) -> bool:
        """Whether any of a few keys holds a live item: one statement, so one snapshot
        (a delete of none of them then happened at that instant)."""
        values: dict[str, Any] = {f"key{at}": key for at, key in enumerate(keys)}
        values["now"] = to_micros(self.clock.now())
        rows = await self._select(_live_keys_select(len(keys)), values, ("live", len(keys)),
                                  point=True)
        return bool(rows)

    async def range(self, prefix: str, limit: int | None = None) -> list[Item]:
        prefix, limit = check_prefix(prefix), check_limit(limit)
        values: dict[str, Any] = {"now": to_micros(self.clock.now()), "start": prefix,
                                  "end": prefix_end(prefix), "limit": limit}
        shape = ("range", bool(prefix), values["end"] is not None, limit is not None)
        rows = await self._select(_range_select(*shape[1:]), values, shape)
        return [item for item in map(row_item, rows) if item.key.startswith(prefix)]

    async def delete_range(self, prefix: str) -> int:
        prefix = check_prefix(prefix)

        def body(tx: WriteTx) -> int:
            found = tx.keys_under(prefix)
            # Expired leftovers go too (with the DELETE event the sweeper would send),
            # but only live items count as deleted.
            tx.remove([key for key, _ in found])
            return sum(not is_expired(from_micros(exp), tx.now) for _, exp in found)
        return await self._transact(body)

    def watch(self, prefixes: Sequence[str]) -> Watcher:
        return Watcher(
            prefixes, attach=self._attach, detach=self._detach, capacity=self.watch_capacity
        )

    async def sweep(self) -> int:
        keys: list[str] = []
        # Look first with a plain read: most sweeps find nothing, and should not take the
        # cluster-wide write lock every second for that.
        probe = select(items.c.key).where(items.c.expires <= to_micros(self.clock.now()))
        async with self._read() as conn:
            due = (await conn.execute(probe.limit(1))).first() is not None
        if due:
            keys = await self._transact(_remove_expired)
        if time.monotonic() - self._last_prune >= _PRUNE_EVERY:
            await self.prune_changes()
        return len(keys)

    async def prune_changes(self) -> int:
        """Drop change rows older than the retention, keeping the newest one."""
        self._last_prune = time.monotonic()
        cutoff = wall_micros() - int(self.change_retention * 1_000_000)
        newest = select(func.max(changes.c.id)).scalar_subquery()
        stmt = delete(changes).where(changes.c.created < cutoff, changes.c.id < newest)
        return await self._transact(lambda tx: int(tx.conn.execute(stmt).rowcount or 0))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in (self._sweeper, self._poller) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for watcher in self._watchers.all():
            watcher.close()
        # Wait for writes in flight, then release every pooled connection.
        await self._writes.close()
        await self._engine.dispose()
        if self._direct is not None:
            await self._direct.close()

    # -- watching -----------------------------------------------------------------------

    async def _attach(self, watcher: Watcher) -> None:
        async with self._poll_lock:
            # Through _select: on SQLite one trip to the reader thread, not aiosqlite's
            # several (every node's access feed attaches a watcher when it connects).
            newest = (await self._select(_NEWEST, {}, ("newest",)))[0][0] or 0
            # Holding the poll lock, no poll is half-way: every change up to `newest` is
            # either already delivered or will be skipped for this watcher, and every
            # change committed from now on gets a larger id.
            if not self._watchers:
                self._cursor = newest
            self._watchers.add(watcher, newest)
        self._have_watchers.set()
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll_forever(), name="limen-sql-watch")

    def _detach(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    async def _poll_forever(self) -> None:
        failing_since: float | None = None
        while True:
            if not self._watchers:
                self._have_watchers.clear()
                await self._have_watchers.wait()
            self._wake.clear()  # before reading: a commit from now on wakes us again
            try:
                more = await self._poll_once()
                if failing_since is not None:
                    log.info("Reading changes works again; watchers resume where they were.")
                failing_since = None
            except Exception as exc:  # noqa: BLE001 - watchers must hear of any failure
                failing_since = failing_since or time.monotonic()
                self._poll_failed(exc, time.monotonic() - failing_since)
                more = False
            if not more:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                # cancellation that races with the wait ending, and close() would hang.
                with suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_interval):
                        await self._wake.wait()

    def _poll_failed(self, exc: Exception, down_for: float) -> None:
        """A failed read of the changes (the database restarting, a dropped connection).

        The cursor stays where it was, so the next successful poll delivers exactly the
        changes committed meanwhile: watchers see a delay, neither a gap nor a repeat.
        Only an outage so long that change rows after the cursor may have been pruned
        (half the retention) ends the watchers with an error, for them to re-sync."""
        message = exc.message if isinstance(exc, LimenError) else "Reading changes failed."
        # The database answered that the tables are not there (or not ours): no waiting
        # brings them back. Anything else (no connection, refused logins) may pass.
        answered = isinstance(exc.__cause__, ProgrammingError)
        if not answered and down_for < self.change_retention / 2:
            log.warning("Watching the backend failed (%s); retrying.", message)
            return
        log.warning("Watching the backend failed for %.0f s, closing its watchers: %s",
                    down_for, message)
        for watcher in self._watchers.all():
            watcher.close(ConnectionProblem(f"{message} Watch again to resume."))

    async def _poll_once(self) -> bool:
        """Deliver the next batch of changes; True if there may be more right away."""
        async with self._poll_lock:
            if not self._watchers:
                return False
            rows = await self._select(_POLL, {"cursor": self._cursor}, ("poll",))
            for change_id, op, key, value, expires, revision in rows:
                item = Item(key, bytes(value), from_micros(expires), revision)
                self._watchers.deliver(Event(OpType(op), item), change_id)
                self._cursor = change_id
            return len(rows) == _POLL_BATCH

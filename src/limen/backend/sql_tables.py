"""The SQL backend's tables and the statements of one write transaction.

Shared by both engines; engine differences live in sql_dialects.py.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    delete,
    insert,
    select,
)

from limen.backend.base import (
    Item,
    OpType,
    from_micros,
    is_expired,
    new_revision,
    prefix_end,
    to_micros,
)
from limen.backend.sql_dialects import Dialect, upsert

_CHUNK = 500  # keys per DELETE ... IN (...), well under SQLite's variable limit

# Keys compare byte-wise ("C" collation) so ORDER BY and prefix ranges agree with
# Python's str ordering; PostgreSQL's default collation is locale-aware and would not.
# SQLite's default (BINARY) already compares UTF-8 bytes.
KEY_TYPE = Text().with_variant(Text(collation="C"), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY (not BIGINT).
ID_TYPE = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

items = Table(
    "kv_items",
    metadata,
    Column("key", KEY_TYPE, primary_key=True),
    Column("value", LargeBinary, nullable=False),
    Column("expires", BigInteger, nullable=True),  # epoch microseconds, backend clock
    Column("revision", String(64), nullable=False),
    Index("kv_items_expires", "expires"),
)

changes = Table(
    "kv_changes",
    metadata,
    Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    Column("op", String(8), nullable=False),
    Column("key", KEY_TYPE, nullable=False),
    Column("value", LargeBinary, nullable=False),
    Column("expires", BigInteger, nullable=True),
    Column("revision", String(64), nullable=False),
    Column("created", BigInteger, nullable=False),  # wall-clock epoch micros, for pruning
    Index("kv_changes_created", "created"),
    # AUTOINCREMENT: never reuse an id after pruning, or a poller's cursor would skip it.
    sqlite_autoincrement=True,
)

ITEM_COLUMNS = (items.c.key, items.c.value, items.c.expires, items.c.revision)
_CURRENT = select(*ITEM_COLUMNS).where(items.c.key == bindparam("key"))
_LOG_CHANGE = insert(changes)
_ITEM_FIELDS = ("value", "expires", "revision")  # what an upsert of an item replaces
def row_item(row: Any) -> Item:
    key, value, expires, revision = row
    return Item(key, bytes(value), from_micros(expires), revision)


class WriteTx:
    """One serialised write transaction: read the current state, decide, write. Its
    statements run synchronously, on whatever thread runs the transaction
    (limen.backend.sql_writes)."""

    def __init__(self, conn: Connection, dialect: Dialect, now: datetime) -> None:
        self.conn = conn
        self.dialect = dialect
        self.now = now

    def current(self, key: str) -> Item | None:
        row = self.conn.execute(_CURRENT, {"key": key}).first()
        if row is None:
            return None
        item = row_item(row)
        return None if is_expired(item.expires, self.now) else item

    def store(self, item: Item) -> Item:
        return self.store_many([item])[0]

    def store_many(self, new: Sequence[Item]) -> list[Item]:
        """Each item and its change row, in two statements whatever their number: a
        statement's trip through the driver costs more than its rows (ten presence
        records took an eighth of the CPU of ten single writes)."""
        stored = [replace(item, revision=new_revision()) for item in new]
        values = [
            {"key": item.key, "value": item.value, "expires": to_micros(item.expires),
             "revision": item.revision}
            for item in stored
        ]
        created = wall_micros()
        # Fixed statements and the values as parameters (see sql_dialects.upsert).
        self.conn.execute(upsert(self.dialect, items, items.c.key, _ITEM_FIELDS), values)
        self.conn.execute(_LOG_CHANGE, [
            {"op": OpType.PUT.value, "created": created, **row} for row in values])
        return stored

    def remove(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), _CHUNK):
            chunk = list(keys[start : start + _CHUNK])
            self.conn.execute(delete(items).where(items.c.key.in_(chunk)))
        if keys:
            created = wall_micros()
            rows = [
                {
                    "op": OpType.DELETE.value,
                    "key": key,
                    "value": b"",
                    "expires": None,
                    "revision": "",
                    "created": created,
                }
                for key in keys
            ]
            self.conn.execute(insert(changes), rows)

    def live_among(self, keys: Sequence[str]) -> list[str]:
        """Those of ``keys`` that hold a live item, in the order given."""
        found: dict[str, int | None] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = list(keys[start : start + _CHUNK])
            stmt = select(items.c.key, items.c.expires).where(items.c.key.in_(chunk))
            found.update(self.conn.execute(stmt).all())
        return [key for key in keys
                if key in found and not is_expired(from_micros(found[key]), self.now)]

    def keys_under(self, prefix: str) -> list[tuple[str, int | None]]:
        stmt = select(items.c.key, items.c.expires).where(*prefix_clauses(prefix))
        rows = self.conn.execute(stmt.order_by(items.c.key)).all()
        return [(key, expires) for key, expires in rows if key.startswith(prefix)]


def wall_micros() -> int:
    return time.time_ns() // 1000


def prefix_clauses(prefix: str) -> list[Any]:
    """``prefix <= key < prefix_end(prefix)``: an index range scan, unlike LIKE."""
    clauses: list[Any] = []
    if prefix:
        clauses.append(items.c.key >= prefix)
        end = prefix_end(prefix)
        if end is not None:
            clauses.append(items.c.key < end)
    return clauses

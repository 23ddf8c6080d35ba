"""The Backend protocol: a small key-value store with expiry, compare-and-swap and watches.

Everything Limen keeps (users, roles, nodes, tokens, locks, CAs) is stored through this
interface, so services never know which engine is underneath. Keys are strings shaped like
paths ("/users/alice/params/password"); values are opaque bytes.

Rules every implementation follows (the compliance suite in tests/backend checks them):

- An item whose ``expires`` is at or before ``clock.now()`` is invisible to every read and
  to update/compare_and_swap/delete at once; ``sweep()`` (and the background sweeper that
  ``open_backend`` starts) removes it later and emits a DELETE event for it.
- Each write stamps a fresh opaque ``revision`` on the item it returns.
- Watchers receive every change committed after their ``__aenter__`` returned, in commit
  order; see ``limen.backend.watch``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from limen.errors import BadParameter

if TYPE_CHECKING:
    from limen.backend.watch import Watcher

log = logging.getLogger(__name__)

#: How often the background sweeper removes expired items, in seconds.
DEFAULT_SWEEP_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class Item:
    """One stored value. ``revision`` is set by the backend on every write."""

    key: str
    value: bytes
    expires: datetime | None = None
    revision: str = ""


class OpType(StrEnum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Event:
    """One committed change. For DELETE, ``item.value == b""``."""

    type: OpType
    item: Item


class Backend(Protocol):
    async def get(self, key: str) -> Item:
        """The live item at ``key``; NotFound if missing or expired."""
        ...

    async def put(self, item: Item) -> Item:
        """Create or replace ``item``."""
        ...

    async def put_many(self, items: Sequence[Item]) -> list[Item]:
        """Create or replace every item in one transaction: all are stored or none, and
        watchers see them in the given order. The keys must differ (BadParameter)."""
        ...

    async def create(self, item: Item) -> Item:
        """Store ``item`` only if no live item has its key; else AlreadyExists."""
        ...

    async def update(self, item: Item) -> Item:
        """Replace a live item; NotFound if there is none."""
        ...

    async def compare_and_swap(self, expected: Item, new: Item) -> Item:
        """Replace the item only if its current value equals ``expected.value``.

        CompareFailed if it differs or the item is missing/expired; BadParameter if the two
        keys differ.
        """
        ...

    async def delete(self, key: str) -> None:
        """Remove a live item; NotFound if there is none."""
        ...

    async def delete_many(self, keys: Sequence[str]) -> int:
        """Remove the live items among ``keys`` in one transaction; a key with no live
        item is passed over. Returns how many were removed."""
        ...

    async def range(self, prefix: str, limit: int | None = None) -> list[Item]:
        """Live items whose key starts with ``prefix``, sorted by key, at most ``limit``."""
        ...

    async def delete_range(self, prefix: str) -> int:
        """Remove every item under ``prefix``; returns how many live items were removed."""
        ...

    def watch(self, prefixes: Sequence[str]) -> Watcher:
        """A watcher for changes under any of ``prefixes`` (use ``async with``)."""
        ...

    async def sweep(self) -> int:
        """Remove expired items now, emitting DELETE events; returns how many."""
        ...

    async def close(self) -> None:
        """Stop background tasks, end watchers, release connections. Idempotent."""
        ...


# ---------------------------------------------------------------------------------------
# Helpers shared by the implementations, so they agree on validation and conversions.


def new_revision() -> str:
    """A fresh opaque revision. Random, so two instances never hand out the same one."""
    return uuid.uuid4().hex


def check_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise BadParameter("A backend key must be a non-empty string.")
    if "\x00" in key:
        # PostgreSQL text cannot hold NUL; refuse it everywhere so engines agree.
        raise BadParameter("A backend key must not contain a NUL character.")
    return key


def check_prefix(prefix: object) -> str:
    if not isinstance(prefix, str):
        raise BadParameter("A key prefix must be a string.")
    if "\x00" in prefix:
        raise BadParameter("A key prefix must not contain a NUL character.")
    return prefix


def check_limit(limit: object) -> int | None:
    if limit is None:
        return None
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise BadParameter("A range limit must be a positive integer or None.")
    return limit


def check_items(items: Sequence[object]) -> list[Item]:
    """Validate the items of one ``put_many``: each as ``check_item``, keys all different
    (two writes of one key in one transaction would leave which one won to the engine)."""
    checked = [check_item(item) for item in items]
    if len({item.key for item in checked}) != len(checked):
        raise BadParameter("put_many needs each key at most once.")
    return checked


def check_item(item: object) -> Item:
    """Validate an item from a caller and normalise its expiry to UTC."""
    if not isinstance(item, Item):
        raise BadParameter("Expected a backend Item.")
    check_key(item.key)
    if not isinstance(item.value, bytes):
        raise BadParameter(f"The value for {item.key!r} must be bytes.")
    expires = item.expires
    if expires is not None:
        if not isinstance(expires, datetime):
            raise BadParameter(f"The expiry for {item.key!r} must be a datetime.")
        if expires.tzinfo is None or expires.utcoffset() is None:
            raise BadParameter(f"The expiry for {item.key!r} must be timezone-aware.")
        expires = expires.astimezone(UTC)
    return Item(item.key, item.value, expires, item.revision)


def is_expired(expires: datetime | None, now: datetime) -> bool:
    return expires is not None and expires <= now


def prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``.

    Lets SQL engines answer a prefix query with an index range scan
    (``prefix <= key < end``) instead of LIKE, whose wildcards and case rules differ
    between engines. None means there is no upper bound (empty prefix, or a prefix made
    only of the highest code point).
    """
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if 0xD800 <= code <= 0xDFFF:  # surrogates cannot be encoded; skip past them
            code = 0xE000
        if code <= 0x10FFFF:
            return "".join(chars) + chr(code)
    return None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(when: datetime | None) -> int | None:
    """Aware datetime -> integer microseconds since the epoch (exact, engine-neutral)."""
    if when is None:
        return None
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int | None) -> datetime | None:
    if micros is None:
        return None
    return _EPOCH + timedelta(microseconds=micros)


async def sweep_forever(backend: Backend, interval: float) -> None:
    """Call ``backend.sweep()`` every ``interval`` seconds until cancelled.

    A failed sweep is logged and retried on the next tick: expired items are already
    invisible to reads, so a late sweep only delays their DELETE events.
    """
    while True:
        await asyncio.sleep(interval)
        try:
            await backend.sweep()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - keep sweeping whatever went wrong
            log.warning("Sweeping expired backend items failed: %s", exc)

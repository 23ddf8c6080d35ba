"""Which node started a session: a node's batch looks its sessions up with one search."""

from __future__ import annotations

import json

import pytest

from limen.audit.bindings import SessionBinding, SessionBindings
from limen.audit.store import EventPage, EventQuery, StoredEvent
from limen.backend.audit_memory import MemoryEventStore
from limen.errors import AccessDenied


class CountingStore(MemoryEventStore):
    def __init__(self) -> None:
        super().__init__()
        self.searches: list[EventQuery] = []

    async def search(self, query: EventQuery) -> EventPage:
        self.searches.append(query)
        return await super().search(query)


def _start(seq: int, sid: str, server_id: str) -> StoredEvent:
    record = {"event": "session.start", "sid": sid, "server_id": server_id, "user": "alice"}
    return StoredEvent("log1", seq, f"uid-{seq}", seq, "session.start", "T2000I", "alice",
                       "web1", server_id, sid, f"{seq:064x}", json.dumps(record))


async def test_a_batch_looks_up_its_sessions_once() -> None:
    store = CountingStore()
    await store.insert([_start(1, "theirs", "node-b")])
    bindings = SessionBindings(store)
    absent = await bindings.absent(["mine", "theirs", "mine", "other"])
    assert absent == {"mine", "other"} and len(store.searches) == 1
    assert await bindings.owned("mine", "node-a", absent) is None
    await bindings.bind(SessionBinding("mine", "node-a"), absent)
    with pytest.raises(AccessDenied, match="started by another node"):
        await bindings.owned("theirs", "node-a", absent)  # found by the one search
    with pytest.raises(AccessDenied, match="started by another node"):
        await bindings.bind(SessionBinding("theirs", "node-a"), absent)
    assert len(store.searches) == 1
    assert await bindings.absent(["mine", "theirs"]) == frozenset()  # both known now
    assert len(store.searches) == 1


async def test_without_the_batch_search_each_lookup_asks_the_store() -> None:
    """A session another instance started after the batch's search is still found by
    a lookup that was not told it is absent."""
    store = CountingStore()
    bindings = SessionBindings(store)
    absent = await bindings.absent(["late"])
    await store.insert([_start(1, "late", "node-b")])
    assert await bindings.owned("late", "node-a", absent) is None  # as the batch saw it
    with pytest.raises(AccessDenied):
        await bindings.owned("late", "node-a")

"""Presence records written together: refreshes wait a moment and go in one transaction,
news goes at once and takes them along, every caller gets its own stored record only
once it is stored, and a failure reaches every caller of its batch.

The storage is a real SQLite backend; the writer's ``write_many`` is the store's own
``upsert_many``, recorded on the way to count transactions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from limen.auth.presence_writes import PresenceWriter
from limen.backend import open_backend
from limen.errors import ConnectionProblem, NotFound
from limen.resources import NodePresence
from limen.services.store import ResourceStore


class Recorded:
    """The store's upsert_many, remembering how many records each call wrote."""

    def __init__(self, store: ResourceStore[NodePresence]) -> None:
        self.store = store
        self.batches: list[list[str]] = []

    async def __call__(self, records: Sequence[NodePresence]) -> list[NodePresence]:
        self.batches.append([record.name for record in records])
        return await self.store.upsert_many(records)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ResourceStore[NodePresence]]:
    backend = await open_backend("sqlite", path=str(tmp_path / "limen.db"))
    yield ResourceStore(backend, NodePresence, "/node_presence")
    await backend.close()


def presence(node: str, addr: str = "127.0.0.1:3022") -> NodePresence:
    return NodePresence.model_validate(
        {"metadata": {"name": node}, "spec": {"addr": addr, "connection": "direct"}})


async def stored_names(store: ResourceStore[NodePresence]) -> list[str]:
    return sorted(record.name for record in await store.list())


async def test_refreshes_wait_and_news_takes_them_along_in_one_transaction(
    store: ResourceStore[NodePresence],
) -> None:
    recorded = Recorded(store)
    writer = PresenceWriter(recorded, linger=60)
    refreshes = [asyncio.create_task(writer.write(presence(f"n{i}"), at_once=False))
                 for i in range(20)]
    await asyncio.sleep(0.05)  # a chance to be written too early, which must not happen
    assert not any(task.done() for task in refreshes)
    assert recorded.batches == [] and await stored_names(store) == []

    news = await writer.write(presence("new", "127.0.0.2:3022"), at_once=True)
    answers = await asyncio.gather(*refreshes)
    assert recorded.batches == [[f"n{i}" for i in range(20)] + ["new"]]
    assert [a.name for a in answers] == [f"n{i}" for i in range(20)]
    assert news.spec.addr == "127.0.0.2:3022" and news.metadata.revision
    for answer in [*answers, news]:  # each answer is the record as stored
        assert (await store.get(answer.name)).metadata.revision == answer.metadata.revision


async def test_a_refresh_alone_is_written_after_the_linger(
    store: ResourceStore[NodePresence],
) -> None:
    recorded = Recorded(store)
    writer = PresenceWriter(recorded, linger=0.05)
    answer = await asyncio.wait_for(writer.write(presence("n1"), at_once=False), 10)
    assert (await store.get("n1")).metadata.revision == answer.metadata.revision
    assert recorded.batches == [["n1"]]


async def test_a_full_batch_goes_without_waiting(store: ResourceStore[NodePresence]) -> None:
    recorded = Recorded(store)
    writer = PresenceWriter(recorded, linger=60, most=5)
    async with asyncio.timeout(10):
        await asyncio.gather(*(writer.write(presence(f"n{i}"), at_once=False)
                               for i in range(5)))
    assert recorded.batches == [[f"n{i}" for i in range(5)]]


async def test_a_node_twice_is_written_once_with_its_later_record(
    store: ResourceStore[NodePresence],
) -> None:
    recorded = Recorded(store)
    writer = PresenceWriter(recorded, linger=60)
    earlier = asyncio.create_task(writer.write(presence("n1", "127.0.0.1:1"), at_once=False))
    await asyncio.sleep(0)
    later = await writer.write(presence("n1", "127.0.0.1:2"), at_once=True)
    assert (await earlier) == later and later.spec.addr == "127.0.0.1:2"
    assert recorded.batches == [["n1"]]
    assert (await store.get("n1")).spec.addr == "127.0.0.1:2"


async def test_flush_writes_what_waits_now(store: ResourceStore[NodePresence]) -> None:
    writer = PresenceWriter(store.upsert_many, linger=60)
    waiting = asyncio.create_task(writer.write(presence("n1"), at_once=False))
    await asyncio.sleep(0)
    await asyncio.wait_for(writer.flush(), 10)
    assert waiting.done() and await stored_names(store) == ["n1"]
    await writer.flush()  # nothing waits: returns at once


async def test_a_caller_that_gives_up_leaves_the_others_their_answers(
    store: ResourceStore[NodePresence],
) -> None:
    writer = PresenceWriter(store.upsert_many, linger=60)
    impatient = asyncio.create_task(writer.write(presence("n1"), at_once=False))
    patient = asyncio.create_task(writer.write(presence("n2"), at_once=False))
    await asyncio.sleep(0)
    impatient.cancel()
    await writer.flush()
    assert (await patient).name == "n2"
    assert impatient.cancelled()
    assert await stored_names(store) == ["n1", "n2"]  # its record was already on its way


async def test_a_failed_write_reaches_every_caller_of_its_batch(
    store: ResourceStore[NodePresence],
) -> None:
    writer = PresenceWriter(store.upsert_many, linger=60)
    callers = [asyncio.create_task(writer.write(presence(f"n{i}"), at_once=False))
               for i in range(3)]
    await asyncio.sleep(0)
    await store.backend.close()  # from here on, every storage write fails
    await writer.flush()
    for caller in callers:
        with pytest.raises(ConnectionProblem):
            await caller
    with pytest.raises(ConnectionProblem):  # and the next batch is tried, not stuck
        await asyncio.wait_for(writer.write(presence("n9"), at_once=True), 10)


async def test_records_left_by_a_stopped_writer_fail_their_callers(
    store: ResourceStore[NodePresence],
) -> None:
    writer = PresenceWriter(store.upsert_many, linger=60)
    waiting = asyncio.create_task(writer.write(presence("n1"), at_once=False))
    await asyncio.sleep(0)
    task = writer._task
    assert task is not None
    task.cancel()  # what the event loop does to a task left running at shutdown
    with pytest.raises(ConnectionProblem, match="stopping"):
        await asyncio.wait_for(waiting, 10)
    with pytest.raises(NotFound):
        await store.get("n1")

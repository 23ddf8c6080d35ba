"""The join gate: at most its limit of joins at once, a waiter let in when one ends,
and one that waits too long turned away with a Retry-After that grows with the queue."""

from __future__ import annotations

import asyncio

import pytest

from limen.errors import Busy
from limen.proxy.join_gate import MAX_RETRY_AFTER, JoinGate


async def test_a_waiting_join_starts_when_one_ends() -> None:
    gate = JoinGate(limit=1, wait=30)
    first_done = asyncio.Event()
    order: list[str] = []

    async def first() -> None:
        async with gate.turn():
            order.append("first")
            await first_done.wait()

    async def second() -> None:
        async with gate.turn():
            order.append("second")

    running = asyncio.create_task(first())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(second())
    await asyncio.sleep(0.01)
    assert order == ["first"]  # the one slot is taken
    first_done.set()
    async with asyncio.timeout(10):
        await asyncio.gather(running, waiting)
    assert order == ["first", "second"]


async def test_a_join_that_cannot_start_in_time_is_told_when_to_return() -> None:
    gate = JoinGate(limit=1, wait=0.05)
    release = asyncio.Event()

    async def hold() -> None:
        async with gate.turn():
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    with pytest.raises(Busy, match="admitting other nodes") as refused:
        async with gate.turn():
            pass
    assert refused.value.http_status == 503 and refused.value.retry_after >= 1
    release.set()
    await holder
    async with gate.turn():  # the slot came back: nothing leaked by the refusal
        pass


def test_the_retry_after_grows_with_the_queue_and_has_a_ceiling() -> None:
    gate = JoinGate(limit=4)
    gate._seconds_per_join = 2.0  # noqa: SLF001 - as if joins had taken 2 s each
    quiet = gate.retry_after()
    gate._waiting = 40  # noqa: SLF001 - forty joins queued behind the running four
    assert gate.retry_after() > quiet >= 1
    gate._waiting = 100_000  # noqa: SLF001
    assert gate.retry_after() == MAX_RETRY_AFTER

"""A node's events leave one call at a time: alone when nothing is out, together when
they were reported while a call was out; each caller hears its own event's answer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from limen.errors import AccessDenied, ConnectionProblem, LimenError
from limen.node.audit.outbox import ReportOutbox

Event = tuple[str, dict[str, Any]]


class HeldCalls:
    """The auth service's side of the calls: each call waits until the test lets it go."""

    def __init__(self) -> None:
        self.calls: list[list[Event]] = []
        self.release = asyncio.Event()
        self.fail_with: LimenError | None = None
        self.refuse: set[str] = set()  # commands whose event is refused

    async def __call__(self, events: list[Event]) -> list[LimenError | None]:
        self.calls.append(events)
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return [AccessDenied(f"not yours: {f['command']}") if f["command"] in self.refuse
                else None for _, f in events]


async def _until(predicate: Any) -> None:
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0)


async def test_events_reported_during_a_call_leave_together_in_order() -> None:
    held = HeldCalls()
    outbox = ReportOutbox(held)
    first = asyncio.create_task(outbox.send("exec", {"command": "a"}))
    await _until(lambda: len(held.calls) == 1)
    rest = [asyncio.create_task(outbox.send("exec", {"command": c})) for c in "bcd"]
    await asyncio.sleep(0)
    held.release.set()
    await asyncio.gather(first, *rest)
    assert [[f["command"] for _, f in call] for call in held.calls] == [["a"], ["b", "c", "d"]]


async def test_a_batch_is_bounded() -> None:
    held = HeldCalls()
    outbox = ReportOutbox(held, limit=2)
    sends = [asyncio.create_task(outbox.send("exec", {"command": c})) for c in "abcde"]
    await _until(lambda: len(held.calls) == 1)
    held.release.set()
    await asyncio.gather(*sends)
    assert [len(call) for call in held.calls] == [2, 2, 1]


async def test_a_refusal_reaches_only_its_own_caller() -> None:
    held = HeldCalls()
    held.refuse = {"b"}
    outbox = ReportOutbox(held)
    held.release.set()
    results = await asyncio.gather(*(outbox.send("exec", {"command": c}) for c in "abc"),
                                   return_exceptions=True)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], AccessDenied) and "not yours: b" in results[1].message


async def test_a_failed_call_fails_every_event_it_carried() -> None:
    held = HeldCalls()
    held.fail_with = ConnectionProblem("cannot reach the proxy")
    outbox = ReportOutbox(held)
    first = asyncio.create_task(outbox.send("exec", {"command": "a"}))
    await _until(lambda: len(held.calls) == 1)
    second = asyncio.create_task(outbox.send("exec", {"command": "b"}))
    await asyncio.sleep(0)
    held.release.set()
    for task in (first, second):
        with pytest.raises(ConnectionProblem, match="cannot reach"):
            await task


async def test_a_caller_that_gives_up_does_not_stop_the_others() -> None:
    held = HeldCalls()
    outbox = ReportOutbox(held)
    first = asyncio.create_task(outbox.send("exec", {"command": "a"}))
    await _until(lambda: len(held.calls) == 1)
    impatient = asyncio.create_task(outbox.send("exec", {"command": "b"}))
    patient = asyncio.create_task(outbox.send("exec", {"command": "c"}))
    await asyncio.sleep(0)
    impatient.cancel()
    held.release.set()
    await asyncio.gather(first, patient)
    assert [f["command"] for _, f in held.calls[1]] == ["b", "c"]  # b still went


async def test_closing_gives_up_on_a_call_that_does_not_end() -> None:
    held = HeldCalls()  # never released: the auth service does not answer
    outbox = ReportOutbox(held)
    first = asyncio.create_task(outbox.send("exec", {"command": "a"}))
    await _until(lambda: len(held.calls) == 1)
    queued = asyncio.create_task(outbox.send("exec", {"command": "b"}))
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await outbox.close(grace=0.1)
    for task in (first, queued):
        with pytest.raises(ConnectionProblem, match="stopped before"):
            await task

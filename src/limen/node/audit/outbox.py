"""A node's audit events on their way to the auth service, sent together when they can be.

One call at a time goes out. An event reported while no call is out is sent at once,
alone, so a quiet node adds no delay; events reported while a call is out wait for it
and then leave together, up to MAX_BATCH in one call (a group commit, as the audit log
itself does). Under load, a busy node's sessions then cost the auth service one request
for many events instead of one each, and every request pays for the node's token, its
registration and its locks once.

Each caller waits for its own event's answer: None once the auth service took it, the
refusal of that event (BadParameter, AccessDenied, ...) as raised, or the call's failure
(the auth service unreachable) for every event of the call. Events leave in the order
they were reported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from limen.errors import ConnectionProblem, LimenError
from limen.tasks import cancel_and_wait

MAX_BATCH = 100  # the API's bound (proxy/web_nodes.py MAX_REPORTED_EVENTS)

Event = tuple[str, dict[str, Any]]
SendBatch = Callable[[list[Event]], Awaitable[list[LimenError | None]]]


class ReportOutbox:
    def __init__(self, send_batch: SendBatch, limit: int = MAX_BATCH) -> None:
        self._send_batch = send_batch
        self._limit = limit
        self._queue: list[tuple[Event, asyncio.Future[None]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def send(self, name: str, fields: dict[str, Any]) -> None:
        """Deliver one event; raises its refusal, or why the call failed."""
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(((name, fields), answer))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._drain(), name="limen-event-outbox")
        await answer

    async def close(self, grace: float = 5.0) -> None:
        """Let the call that is out finish for ``grace`` seconds, then give up on it: its
        callers and those still queued hear ConnectionProblem (and spool their events)."""
        sender = self._sender
        if sender is None:
            return
        await asyncio.wait({sender}, timeout=grace)
        await cancel_and_wait(sender)
        stopped = ConnectionProblem("the node stopped before the auth service answered")
        for _, future in self._queue:
            if not future.done():
                future.set_exception(stopped)
        self._queue = []

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:self._limit], self._queue[self._limit:]
            try:
                answers = await self._answers([event for event, _ in batch])
            except asyncio.CancelledError:
                self._queue[:0] = batch  # close() answers them
                raise
            for (_, future), answer in zip(batch, answers, strict=True):
                if future.done():  # its caller gave up; the event went all the same
                    continue
                if answer is None:
                    future.set_result(None)
                else:
                    future.set_exception(answer)

    async def _answers(self, events: list[Event]) -> list[LimenError | None]:
        try:
            answers = await self._send_batch(events)
        except LimenError as exc:
            return [exc] * len(events)
        except Exception as exc:  # noqa: BLE001 - a caller must hear of it, not hang
            return [ConnectionProblem(f"reporting events failed: {exc}")] * len(events)
        if len(answers) != len(events):
            return [ConnectionProblem("the answer does not match the events sent")] * len(events)
        return answers

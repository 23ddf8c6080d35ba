"""Node presence records written together, in one storage transaction.

With thousands of nodes, the refresh of their presence records (one per node every few
minutes, node_registry.PRESENCE_REFRESH) is most of what an idle auth service writes:
3,000 tunneled nodes make ten a second. One write a transaction cost about 1.3 ms of CPU;
ten in one transaction (two statements whatever their number) cost about an eighth of that
each, and wake the watchers' poller once instead of ten times.

So a refresh lingers up to LINGER seconds for others to join it. A record that says
something new (a node's first heartbeat here, a new address or connection) is written at
once, and takes whatever is waiting along. Either way the caller's answer waits for its
own record to be committed: nothing is acknowledged before it is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from limen.errors import ConnectionProblem
from limen.resources import NodePresence

#: Seconds a refresh may wait for others: a heartbeat's answer is not waited on by anyone
#: (the node beats again minutes later), so a second costs nobody.
LINGER = 1.0
#: Records at which a batch goes without waiting longer.
MOST = 500

WriteMany = Callable[[Sequence[NodePresence]], Awaitable[list[NodePresence]]]
Waiting = dict[str, tuple[NodePresence, list["asyncio.Future[NodePresence]"]]]


class PresenceWriter:
    """Gathers presence records and writes them with ``write_many`` (a store's
    ``upsert_many``). One batch is written at a time; a later record of the same node
    replaces a waiting one, and both callers get the stored record."""

    def __init__(self, write_many: WriteMany, *,
                 linger: float = LINGER, most: int = MOST) -> None:
        self._write_many = write_many
        self.linger = linger
        self.most = most
        self._waiting: Waiting = {}
        self._hurry = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Records gathered for the next batch."""
        return len(self._waiting)

    async def write(self, presence: NodePresence, *, at_once: bool) -> NodePresence:
        """Store ``presence`` with the next batch; ``at_once`` sends that batch now."""
        done: asyncio.Future[NodePresence] = asyncio.get_running_loop().create_future()
        _, waiters = self._waiting.get(presence.name, (presence, []))
        self._waiting[presence.name] = (presence, [*waiters, done])
        if at_once or len(self._waiting) >= self.most:
            self._hurry.set()
        if self._task is None:
            self._task = asyncio.create_task(self._write_batches(), name="limen-presence")
            self._task.add_done_callback(self._ended)
        return await done

    async def flush(self) -> None:
        """Write what waits now, and return once it is stored (or failed)."""
        task = self._task
        if task is not None:
            self._hurry.set()
            await asyncio.shield(task)

    async def _write_batches(self) -> None:
        while self._waiting:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.linger):
                    await self._hurry.wait()
            batch, self._waiting = self._waiting, {}
            self._hurry.clear()
            await self._write_batch(batch)
        self._task = None

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A task cancelled (at shutdown, perhaps before it ever ran) leaves records
        behind: their callers hear of it rather than wait forever."""
        if self._task is task:
            self._task = None
            left, self._waiting = self._waiting, {}
            _settle(left, _stopping())

    async def _write_batch(self, batch: Waiting) -> None:
        try:
            stored = await self._write_many([presence for presence, _ in batch.values()])
        except asyncio.CancelledError:
            _settle(batch, _stopping())
            raise
        except Exception as exc:  # noqa: BLE001 - each caller gets the storage's error
            _settle(batch, exc)
        else:
            _settle(batch, stored)


def _stopping() -> ConnectionProblem:
    return ConnectionProblem("The auth service is stopping.")


def _settle(batch: Waiting, outcome: list[NodePresence] | Exception) -> None:
    """Each caller gets its own stored record, or the batch's error."""
    for index, (_, waiters) in enumerate(batch.values()):
        for done in waiters:
            if done.done():  # its caller gave up waiting
                continue
            if isinstance(outcome, Exception):
                done.set_exception(outcome)
            else:
                done.set_result(outcome[index])

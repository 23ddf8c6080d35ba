"""The node's access cache comes back quickly after each break of its feed.

The feed here is a stand-in for the auth service's stream (a generator that syncs, then
breaks), so that the pauses between tries can be read off the cache's backoff.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

from limen.auth.access_cache import AccessCache
from limen.errors import ConnectionProblem
from limen.resources import Lock
from limen.tunnel.backoff import Backoff


class Recorded(Backoff):
    """The backoff, remembering each pause it chose."""

    def __init__(self) -> None:
        super().__init__(first=0.01, cap=10.0, rng=random.Random(7))
        self.pauses: list[float] = []

    def next(self) -> float:
        self.pauses.append(super().next())
        return self.pauses[-1]


async def _no_locks(_: Lock) -> None:
    return None


async def _run_until_paused(feed: Callable[[], AsyncIterator[dict[str, Any]]],
                            pauses: int) -> tuple[AccessCache, Recorded]:
    """Run a cache on ``feed`` until its backoff has chosen ``pauses`` pauses, then stop it."""
    backoff = Recorded()
    cache = AccessCache(feed, _no_locks, backoff=backoff)
    cache.start()
    try:
        async with asyncio.timeout(10):
            while len(backoff.pauses) < pauses:
                await asyncio.sleep(0.005)
    finally:
        await cache.stop()
    return cache, backoff


async def test_each_break_after_a_sync_is_retried_at_the_first_step() -> None:
    async def syncs_then_breaks() -> AsyncIterator[dict[str, Any]]:
        yield {"op": "ready"}
        raise ConnectionProblem("the proxy restarted")

    _, backoff = await _run_until_paused(syncs_then_breaks, 5)
    assert len(backoff.pauses) >= 5
    assert max(backoff.pauses) <= 0.01  # never past the first step: each sync reset it


async def test_a_feed_that_never_syncs_backs_off_further_each_time() -> None:
    async def refused() -> AsyncIterator[dict[str, Any]]:
        raise ConnectionProblem("cannot reach the proxy")
        yield {}  # pragma: no cover - makes this a generator

    cache, backoff = await _run_until_paused(refused, 4)
    assert not cache.ready.is_set()
    assert backoff.pauses[3] > 0.04  # 0.08 at the fourth step, at least half of it

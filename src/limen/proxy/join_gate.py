"""How many node joins the proxy works on at once, and what the others are told.

A fleet coming up (thousands of nodes after an outage, or a new autoscaling group)
asks to join faster than one proxy admits them: each join is a TLS handshake, a
token check, a host certificate and, right after, the tunnel's handshake. Queued
without a bound, a join waits behind the others until the node's own timeout, and the
node tries again while the proxy still works on the abandoned request: measured at a
thousand simulated nodes, these retries were the queue. So at most ``limit`` joins run
at once; a join that cannot start within ``wait`` seconds is answered at once with
503 and a Retry-After that grows with the queue, and the node comes back then
(limen.node.cluster.membership). Nothing of the token is spent on a refused join.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from limen.errors import Busy

LIMIT = 4  # joins worked on at once
WAIT = 5.0  # seconds a join may wait for its turn (well under a node's 15 s timeout)
MAX_RETRY_AFTER = 60


class JoinGate:
    def __init__(self, limit: int = LIMIT, wait: float = WAIT) -> None:
        self.limit = limit
        self.wait = wait
        self._slots = asyncio.Semaphore(limit)
        self._waiting = 0
        self._seconds_per_join = 0.5  # a running average of how long a join takes

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold one of the join slots for the block, or raise Busy."""
        self._waiting += 1
        try:
            async with asyncio.timeout(self.wait):
                await self._slots.acquire()
        except TimeoutError:
            raise Busy("the proxy is admitting other nodes right now; "
                       "try joining again shortly", self.retry_after()) from None
        finally:
            self._waiting -= 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            yield
        finally:
            self._slots.release()
            self._seconds_per_join += 0.2 * (loop.time() - started - self._seconds_per_join)

    def retry_after(self) -> int:
        """Seconds until the joins queued now are likely done (at least one)."""
        backlog = (self._waiting + self.limit) * self._seconds_per_join / self.limit
        return max(1, min(MAX_RETRY_AFTER, math.ceil(backlog)))

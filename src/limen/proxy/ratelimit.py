"""Token buckets per client address for the unauthenticated endpoints."""

from __future__ import annotations

import time
from collections.abc import Callable

from limen.errors import LimitExceeded


class RateLimiter:
    """`average_per_minute` refill, `burst` capacity, one bucket per key."""

    def __init__(
        self,
        average_per_minute: float,
        burst: int,
        monotonic: Callable[[], float] = time.monotonic,
        max_keys: int = 65536,
    ) -> None:
        self.rate = average_per_minute / 60.0
        self.burst = float(burst)
        self.monotonic = monotonic
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> None:
        now = self.monotonic()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            raise LimitExceeded("too many requests from your address; wait a minute and try again")
        if len(self._buckets) >= self.max_keys and key not in self._buckets:
            self._buckets.clear()  # bounded memory under address spraying
        self._buckets[key] = (tokens - 1, now)

"""Jittered exponential backoff for reconnecting agents.

After a proxy restart every agent reconnects at once; random jitter spreads them out,
and the cap keeps the longest wait after the proxy is back under 10 seconds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    first: float = 0.5
    cap: float = 10.0
    factor: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next(self) -> float:
        """Seconds to wait before the next try: between half and all of the current step."""
        step = min(self.cap, self.first * self.factor**self.attempt)
        self.attempt += 1
        return self.rng.uniform(step / 2, step)

    def reset(self) -> None:
        self.attempt = 0

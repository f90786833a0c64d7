"""Rate limits: a token bucket for requests per minute and tokens per minute."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """Holds up to ``per_minute`` tokens, refilled continuously at ``per_minute / 60``
    per second; :meth:`take` waits until enough tokens are there.

    Waiters are served first come, first served (a lock), so a large request cannot be
    starved by a stream of small ones. A request larger than the whole bucket waits for
    a full bucket and then takes it all (the bucket goes negative and repays the debt).
    """

    def __init__(self, per_minute: float) -> None:
        if per_minute <= 0:
            raise ValueError("a rate must be positive")
        self.capacity = float(per_minute)
        self.rate_per_s = per_minute / 60.0
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate_per_s)
        self._stamp = now

    async def take(self, amount: float) -> None:
        """Wait until ``amount`` tokens (capped at the capacity) can be taken; take them."""
        async with self._lock:
            needed = min(amount, self.capacity)
            self._refill()
            while self._tokens < needed:
                await asyncio.sleep((needed - self._tokens) / self.rate_per_s)
                self._refill()
            self._tokens -= amount

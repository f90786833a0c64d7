"""Watches the event loop's lag, so fleetbench says when it is itself the bottleneck.

A busy loop delays every await: requests leave late and responses are read late, which
inflates measured latency with the client's own delay. The monitor asks to wake every
``interval_s`` and records how late it woke; a high p99 becomes a run warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics

WARN_P99_MS = 10.0


class LoopLagMonitor:
    """Samples the lag of the running event loop until stopped."""

    def __init__(self, interval_s: float = 0.05, max_samples: int = 100_000) -> None:
        self.interval_s = interval_s
        self.max_samples = max_samples
        self.samples_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while len(self.samples_ms) < self.max_samples:
            due = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.samples_ms.append(max(0.0, (loop.time() - due) * 1000))

    def p99_ms(self) -> float | None:
        if len(self.samples_ms) < 2:
            return self.samples_ms[0] if self.samples_ms else None
        return statistics.quantiles(self.samples_ms, n=100, method="inclusive")[98]

    def warning(self) -> str | None:
        """A warning when the loop lagged enough to distort measured timings."""
        p99 = self.p99_ms()
        if p99 is None or p99 < WARN_P99_MS:
            return None
        return (f"the client was a bottleneck: event-loop lag p99 {p99:.1f} ms, max "
                f"{max(self.samples_ms):.1f} ms; measured latency and TTFT may include up to "
                "that much of fleetbench's own delay (lower concurrency or spread the run)")

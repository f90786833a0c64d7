"""Live progress bars for ``fleetbench run``: overall and per provider (done/total, pass
rate, p50 latency, cost so far, ETA), and the summary table printed at the end."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from fleetbench._planner import Plan
from fleetbench.events import Event, TestFinished
from fleetbench.records import GroupStats, Summary


class ProgressView:
    """A bus subscriber that counts results, plus a refresh loop that renders them.

    ``snapshot`` supplies the live aggregates (percentiles, cost) at each refresh.
    """

    def __init__(self, plan: Plan, already_done: Counter[str], console: Console,
                 snapshot: Callable[[], Summary]) -> None:
        self._snapshot = snapshot
        self.progress = Progress(
            TextColumn("{task.description:<32}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeRemainingColumn(),
            console=console, transient=False, refresh_per_second=4,
        )
        planned = Counter(item.provider_key for item in plan.items)
        self._overall = self.progress.add_task("fleet", total=len(plan),
                                               completed=sum(already_done.values()), stats="")
        self._tasks: dict[str, TaskID] = {
            key: self.progress.add_task(key, total=count, completed=already_done[key],
                                        stats="")
            for key, count in sorted(planned.items())
        }

    async def handle(self, events: Sequence[Event]) -> None:
        finished = Counter(e.result.item.provider_key for e in events
                           if isinstance(e, TestFinished))
        for key, count in finished.items():
            self.progress.advance(self._tasks[key], count)
        self.progress.advance(self._overall, sum(finished.values()))

    def refresh(self) -> None:
        summary = self._snapshot()
        self.progress.update(self._overall, stats=_stats(summary.fleet))
        for key, task in self._tasks.items():
            stats = summary.by_provider.get(key)
            if stats is not None:
                self.progress.update(task, stats=_stats(stats))

    async def refresh_forever(self, interval_s: float = 0.5) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                self.refresh()
                await asyncio.sleep(interval_s)


def _stats(stats: GroupStats) -> str:
    answered = stats.total - stats.skipped - stats.cancelled
    rate = f"{stats.passed / answered:6.1%}" if answered else "     -"
    p50 = stats.latency_ms.p50
    latency = f"{p50:7.0f} ms" if p50 is not None else "      - ms"
    return f"pass {rate}  p50 {latency}  ${stats.cost_usd:.4f}"


def summary_table(summary: Summary) -> Table:
    """Per provider: tests, pass rate, errors, latency and TTFT percentiles, tokens, cost."""
    table = Table(title="Results by provider")
    for column in ("provider", "tests", "passed", "failed", "errors", "success",
                   "p50 ms", "p95 ms", "ttft p50", "tokens", "cost $"):
        table.add_column(column, justify="left" if column == "provider" else "right")
    rows = sorted(summary.by_provider.items())
    for name, stats in [*rows, ("fleet", summary.fleet)]:
        if name == "fleet":
            table.add_section()
        table.add_row(
            name, str(stats.total), str(stats.passed), str(stats.failed),
            str(stats.error + stats.timeout), f"{stats.success_rate:.1%}",
            _ms(stats.latency_ms.p50), _ms(stats.latency_ms.p95), _ms(stats.ttft_ms.p50),
            f"{stats.input_tokens + stats.output_tokens:,}",
            f"{stats.cost_usd:.4f}" + ("*" if stats.unpriced_tests else ""),
        )
    return table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


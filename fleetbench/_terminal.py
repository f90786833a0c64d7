"""``fleetbench run`` in a terminal: the event loop, Ctrl-C, progress and the outcome."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from fleetbench._aggregator import Aggregator
from fleetbench._plugins import PluginHost
from fleetbench._prepare import Prepared
from fleetbench._progress import ProgressView, summary_table
from fleetbench._runner import RunOutcome, execute_run
from fleetbench._store import RunStore
from fleetbench.records import GroupStats, RunStatus

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_INTERRUPTED = 130


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How ``fleetbench run`` was asked to behave; ``executor`` (``--executor``) overrides
    the manifest's ``global_settings.executor``; ``run_key`` (``--run-key``) is recorded
    with the run, so the server can resume it with the same key."""

    state_dir: Path
    labels: Mapping[str, str] = field(default_factory=dict)
    show_progress: bool = True
    executor: str | None = None
    run_key: str = ""


def run_in_terminal(prepared: Prepared, host: PluginHost, options: RunOptions) -> RunOutcome:
    """Run ``prepared`` to its end. The first Ctrl-C cancels cleanly (the run stays
    resumable); a second one aborts at once."""
    return asyncio.run(_run(prepared, host, options))


async def _run(prepared: Prepared, host: PluginHost, options: RunOptions) -> RunOutcome:
    cancel = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, _on_interrupt, cancel)
    loop.add_signal_handler(signal.SIGTERM, cancel.set)
    store = RunStore(options.state_dir)
    try:
        if not options.show_progress:
            return await execute_run(prepared, host=host, store=store, labels=options.labels,
                                     cancel=cancel, executor=options.executor,
                                     run_key=options.run_key)
        return await _with_progress(prepared, host, store, options, cancel)
    finally:
        store.close()
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)


async def _with_progress(prepared: Prepared, host: PluginHost, store: RunStore,
                         options: RunOptions, cancel: asyncio.Event) -> RunOutcome:
    done = Counter(r.item.provider_key for _, r in store.iter_results(prepared.plan.run_id))
    live = Aggregator()
    view = ProgressView(prepared.plan, done, Console(stderr=True), live.snapshot)
    refresher = asyncio.create_task(view.refresh_forever())
    try:
        with view.progress:
            outcome = await execute_run(
                prepared, host=host, store=store, labels=options.labels, cancel=cancel,
                subscribers=[("progress", view)], live=live, executor=options.executor,
                run_key=options.run_key)
            view.refresh()
    finally:
        refresher.cancel()
    return outcome


def _on_interrupt(cancel: asyncio.Event) -> None:
    if cancel.is_set():
        raise KeyboardInterrupt  # second Ctrl-C: stop now
    cancel.set()


def exit_code(outcome: RunOutcome, min_success_rate: float | None) -> int:
    """0 when the run completed (and met the success-rate gate); see ``fleetbench run``."""
    if outcome.status is RunStatus.CANCELLED:
        return EXIT_INTERRUPTED
    if outcome.status is not RunStatus.COMPLETED:
        return EXIT_RUN_FAILED
    if min_success_rate is not None and outcome.summary.fleet.success_rate < min_success_rate:
        return EXIT_RUN_FAILED
    return EXIT_OK


def print_outcome(outcome: RunOutcome) -> None:
    # Off a terminal (CI logs, pipes) rich assumes 80 columns and squeezes the table.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    console.print(summary_table(outcome.summary))
    for warning in outcome.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    origin = "" if outcome.created else " (this run id existed: it was resumed or reused)"
    console.print(f"run {outcome.run_id}: {outcome.status.value}{origin}"
                  + (f" ({outcome.error})" if outcome.error else ""), highlight=False)
    console.print(f"artifacts in {outcome.output_dir}/:", highlight=False)
    for path in outcome.artifacts:
        console.print(f"  {path.name}", highlight=False)


def outcome_json(outcome: RunOutcome) -> dict[str, Any]:
    """The outcome as JSON data for ``--json``."""
    return {
        "run_id": outcome.run_id,
        "status": outcome.status.value,
        "created": outcome.created,
        "error": outcome.error,
        "output_dir": str(outcome.output_dir),
        "artifacts": [str(p) for p in outcome.artifacts],
        "warnings": list(outcome.warnings),
        "fleet": _group_json(outcome.summary.fleet),
        "providers": {k: _group_json(v) for k, v in sorted(outcome.summary.by_provider.items())},
    }


def _group_json(stats: GroupStats) -> dict[str, Any]:
    return {
        "total": stats.total, "passed": stats.passed, "failed": stats.failed,
        "error": stats.error, "timeout": stats.timeout, "success_rate": stats.success_rate,
        "latency_ms_p50": stats.latency_ms.p50, "latency_ms_p95": stats.latency_ms.p95,
        "ttft_ms_p50": stats.ttft_ms.p50, "input_tokens": stats.input_tokens,
        "output_tokens": stats.output_tokens, "cost_usd": stats.cost_usd,
        "unpriced_tests": stats.unpriced_tests,
    }

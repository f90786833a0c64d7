"""The built-in ``local`` executor: every test on this process's asyncio event loop."""

from __future__ import annotations

from fleetbench._executor import LocalExecutor
from fleetbench.plugin import ExecutorSpec, hookimpl


@hookimpl
def fleetbench_register_executors() -> list[ExecutorSpec]:
    return [ExecutorSpec("local", LocalExecutor,
                         "asyncio on this process: per-provider workers, limits, retries")]

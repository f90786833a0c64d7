"""The core's shard seam without Ray: a plan captured as a shard survives pickling,
carries no API key, and runs to the local executor's results in another event loop."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from ray_support import KEY, NODE_KEY_ENV, fake_vendor_entry, rows, run, write_fleet

from fleetbench._executor import ExecutionPlan
from fleetbench._plugins import PluginHost, load_plugins
from fleetbench._shard import Shard, run_shard
from fleetbench.plugin import ExecutorSpec, hookimpl
from fleetbench.records import RunStatus
from fleetbench.testing import FakeVendorServer


class _PickledShardExecutor:
    """Runs the plan as one pickled shard, as a remote worker would."""

    shipped: list[bytes] = []

    def __init__(self, plan: ExecutionPlan) -> None:
        self.plan = plan

    async def run(self) -> str | None:
        data = pickle.dumps(Shard.of_plan(self.plan))
        self.shipped.append(data)
        return await run_shard(pickle.loads(data), self.plan.on_result,
                               cancel=self.plan.cancel, env={NODE_KEY_ENV: KEY})


class _Plugin:
    FLEETBENCH_PLUGIN_API_VERSION = 1

    @hookimpl
    def fleetbench_register_executors(self) -> list[ExecutorSpec]:
        return [ExecutorSpec("pickled-shard", _PickledShardExecutor)]


async def test_a_pickled_shard_runs_like_the_local_executor_and_holds_no_key(
        tmp_path: Path) -> None:
    host: PluginHost = load_plugins(env={}, extra_plugins=[("pickled", _Plugin())])
    async with FakeVendorServer("openai", api_key=KEY) as vendor:
        outcomes: dict[str, Any] = {}
        for executor in ("local", "pickled-shard"):
            path = write_fleet(tmp_path / executor,
                               [fake_vendor_entry(vendor.base_url, concurrency=3),
                                {"id": "simulated:s", "params": {"zero_latency": True,
                                                                 "accuracy": 0.5}}],
                               tests=10, global_settings={"max_in_flight": 4})
            outcomes[executor] = await run(path, host, tmp_path / executor, executor=executor)
    local, shard = outcomes["local"], outcomes["pickled-shard"]
    assert shard.status is RunStatus.COMPLETED
    assert [(r["key"], r["status"], r["output_tokens"]) for r in rows(shard)] == \
        [(r["key"], r["status"], r["output_tokens"]) for r in rows(local)]
    assert _PickledShardExecutor.shipped
    assert all(KEY.encode() not in data for data in _PickledShardExecutor.shipped)

"""Benchmark: the local executor against the ``ray`` executor, same fleet, same vendor.

A fake OpenAI-compatible vendor runs in its own process with 50 ms latency; a fleet of
one ``openai`` provider entry at high concurrency runs through the whole engine
(``execute_run``: plan, executor, openai plugin, store, aggregator, jsonl export) twice:
with the local executor (every request on this process's event loop) and with the Ray
executor on a local Ray cluster started here (the requests on ``--actors`` async actors,
results streamed back into this process's bus and store). The two runs use different
run keys, so neither resumes the other.

Printed per executor: tests/s over the whole run (the Ray figure includes starting the
actors, not the cluster), the peak number of requests in flight at the vendor, this
process's CPU seconds and per test (for Ray: the driver's only, which bounds how far
more machines can take a run) and the vendor's CPU seconds. The
executors alternate for ``--rounds`` rounds (these 2-core machines are noisy) and the
ratio compares their best rounds.

    .venv/bin/python bench/bench_ray.py [--tests 20000] [--concurrency 512] [--actors 2]
                                        [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

# Before Ray is imported: a cluster of this machine addressed on 127.0.0.1 only.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray

from fleetbench._logging import configure_logging
from fleetbench._plugins import load_plugins
from fleetbench._prepare import prepare_file
from fleetbench._runner import execute_run
from fleetbench._store import RunStore
from fleetbench.testing import FakeVendorConfig, FakeVendorProcess

KEY_ENV = "BENCH_RAY_OPENAI_KEY"
CASES = 100


def write_fleet(root: Path, base_url: str, tests: int, concurrency: int, actors: int) -> Path:
    """One repository, one scenario of ``CASES`` prompts repeated to reach ``tests``."""
    folder = root / "repo" / "datasets"
    folder.mkdir(parents=True)
    cases = [{"id": f"c{i}", "prompt": f"Question {i}: say hello", "expected": "Hello"}
             for i in range(CASES)]
    (folder / "chat.json").write_text(json.dumps({"name": "chat", "version": "1",
                                                  "test_cases": cases}))
    manifest = {
        "fleet_id": "bench-ray", "version": "1.0",
        "repositories": [{"repo_id": "repo", "path": "repo", "scenarios": ["chat"]}],
        "providers": [{"id": "openai:fake-gpt", "base_url": base_url, "api_key_env": KEY_ENV,
                       "concurrency": concurrency}],
        "scenario_profiles": {"chat": {"dataset": "chat", "repeat": max(1, tests // CASES),
                                       "concurrency": concurrency}},
        "output": {"base_dir": "./out", "formats": ["jsonl"]},
        "global_settings": {"ray_actors": actors},
    }
    path = root / "fleet.json"
    path.write_text(json.dumps(manifest))
    return path


async def timed_run(path: Path, root: Path, executor: str, run_key: str) -> dict[str, Any]:
    host = load_plugins()
    prepared = prepare_file(path, host=host, cache_dir=root / "cache", run_key=run_key)
    with RunStore(root / "state") as store:
        cpu, wall = time.process_time(), time.perf_counter()
        outcome = await execute_run(prepared, host=host, store=store, executor=executor,
                                    export_worker_min_tests=10**9)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert outcome.summary.fleet.passed == len(prepared.plan), outcome.summary.fleet
    return {"tests": len(prepared.plan), "wall": wall, "cpu": cpu}


def report(executor: str, result: dict[str, Any], vendor: dict[str, Any],
           vendor_cpu: float) -> None:
    print(f"{executor:>5}: {result['tests'] / result['wall']:8.0f} tests/s "
          f"({result['tests']} tests in {result['wall']:.2f} s); peak in flight at the vendor "
          f"{vendor['max_in_flight']}; driver CPU {result['cpu']:.1f} s "
          f"({result['cpu'] * 1000 / result['tests']:.2f} ms a test); "
          f"vendor CPU {vendor_cpu:.1f} s")


async def amain(args: argparse.Namespace, root: Path) -> None:
    config = FakeVendorConfig(latency_ms=args.latency_ms, output_tokens=16)
    with FakeVendorProcess(config) as vendor:
        path = write_fleet(root, vendor.base_url, args.tests, args.concurrency, args.actors)
        best: dict[str, float] = {}
        for round_ in range(args.rounds):
            for executor in ("local", "ray"):
                vendor.reset()
                before = vendor.fetch()["cpu_s"]
                result = await timed_run(path, root, executor, f"{executor}-{round_}")
                after = vendor.fetch()
                report(executor, result, after, after["cpu_s"] - before)
                best[executor] = max(best.get(executor, 0.0), result["tests"] / result["wall"])
    ratio = best["ray"] / best["local"]
    print(f"ray / local throughput (best rounds): {ratio:.2f}×  ({os.cpu_count()} CPUs, "
          f"{args.actors} "
          f"actors, concurrency {args.concurrency}, vendor latency {args.latency_ms:g} ms)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=512)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    configure_logging()
    os.environ[KEY_ENV] = "sk-bench"  # before the cluster starts: its actors inherit it
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        root = Path(tmp)
        ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False,
                 _temp_dir=str(root / "ray"), object_store_memory=500 * 1024 * 1024,
                 logging_level=logging.WARNING, log_to_driver=False)
        try:
            asyncio.run(amain(args, root))
        finally:
            ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""End-to-end throughput: a fleet on the zero-latency simulated provider, with the run
store, the live aggregator and every exporter on.

    python bench/bench_run.py [--tests 100000]

Prints tests/s for the whole run (plan → execute → persist → export), the time of each
phase, and the peak RSS of the run's process and, separately, of its largest child (the
export worker, which a run of 5,000 tests or more starts; ``ru_maxrss`` of
``RUSAGE_SELF`` does not include it). The target (issue #3): ≥ 10,000 tests/s and
peak RSS ≤ 500 MB for 100,000 tests. As a reference measured in the same run it also
times the bare provider calls alone (no executor), so the ratio shows the engine's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from fleetbench._plugins import load_plugins
from fleetbench._prepare import prepare_file
from fleetbench._runner import execute_run
from fleetbench._store import RunStore
from fleetbench.events import Event, RunFinished, TestFinished
from fleetbench.plugin import ProviderConfig
from fleetbench.records import ProviderRequest


def write_fleet(root: Path, tests: int, concurrency: int = 64) -> Path:
    """10 repositories × 1 scenario × 2 zero-latency providers (``concurrency`` requests
    in flight each), every exporter on; cases sized to reach ``tests``."""
    repos, providers = 10, 2
    per_dataset = max(1, tests // (repos * providers))
    for r in range(repos):
        cases = [{"id": f"t{i}", "category": f"cat{i % 5}", "prompt": f"Question {i}?",
                  "expected": "answer"} for i in range(per_dataset)]
        folder = root / f"repo{r}" / "datasets"
        folder.mkdir(parents=True)
        (folder / "bench.json").write_text(json.dumps(
            {"name": "bench", "version": "1", "test_cases": cases}))
    manifest = {
        "fleet_id": "bench", "version": "1.0",
        "repositories": [{"repo_id": f"repo{r}", "path": f"repo{r}", "scenarios": ["s"]}
                         for r in range(repos)],
        "providers": [{"id": f"simulated:m{p}", "concurrency": concurrency,
                       "params": {"zero_latency": True, "seed": p, "accuracy": 0.9},
                       "pricing": {"input_per_mtok": 1, "output_per_mtok": 2}}
                      for p in range(providers)],
        "scenario_profiles": {"s": {"dataset": "bench", "concurrency": 1000}},
        "output": {"base_dir": "out", "formats": ["json", "jsonl", "csv"]},
    }
    path = root / "fleet.json"
    path.write_text(json.dumps(manifest))
    return path


async def bare_calls(n: int) -> float:
    """The reference: ``n`` zero-latency provider calls in a plain loop."""
    import httpx

    host = load_plugins(env={})
    config = ProviderConfig("simulated", "m0", params={"zero_latency": True})
    async with httpx.AsyncClient() as http:
        provider = host.providers["simulated"].factory(config, http)
        from fleetbench.records import GenerationSettings

        started = time.perf_counter()
        for i in range(n):
            await provider.generate(ProviderRequest("m0", f"Question {i}?", GenerationSettings(),
                                                    False, f"k{i}", expected="answer"))
        return time.perf_counter() - started


class PhaseClock:
    """A bus subscriber noting when the last result and the end of the run arrive, to
    split execution from the export that is left after the last test."""

    def __init__(self) -> None:
        self.last_result = self.finished = 0.0

    async def handle(self, events: Sequence[Event]) -> None:
        for event in events:
            if isinstance(event, TestFinished):
                self.last_result = time.perf_counter()
            elif isinstance(event, RunFinished):
                self.finished = time.perf_counter()


async def main(tests: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = write_fleet(root, tests)
        host = load_plugins(env={})
        t0 = time.perf_counter()
        prepared = prepare_file(path, host=host, cache_dir=root / "cache")
        t1 = time.perf_counter()
        clock = PhaseClock()
        with RunStore(root / "state") as store:
            outcome = await execute_run(prepared, host=host, store=store,
                                        subscribers=[("phases", clock)])
        t2 = time.perf_counter()
        n = outcome.summary.fleet.total
        bare = await bare_calls(min(n, 20_000)) * n / min(n, 20_000)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"tests                 {n:>10,}")
    print(f"plan                  {t1 - t0:>10.2f} s")
    print(f"execute+persist+export{t2 - t1:>10.2f} s")
    print(f"  execute+persist     {clock.last_result - t1:>10.2f} s   (until the last result)")
    print(f"  export after that   {clock.finished - clock.last_result:>10.2f} s")
    print(f"end-to-end            {n / (t2 - t0):>10,.0f} tests/s   (target >= 10,000)")
    print(f"bare provider calls   {n / bare:>10,.0f} calls/s  (reference, same run)")
    print(f"engine cost / call    {(t2 - t0 - bare) / n * 1e6:>10.1f} us")
    print(f"peak RSS              {rss_mb:>10.0f} MB      (target <= 500)")
    print(f"peak RSS, export worker{child_mb:>9.0f} MB      (largest child; 0: none)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=100_000)
    asyncio.run(main(parser.parse_args().tests))
    sys.exit(0)

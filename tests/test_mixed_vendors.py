"""One fleet across every vendor fleetbench has a plugin for, each behind its fake server, plus
the simulated provider: the run completes, every provider gets its own breakdown in every
artifact, and the numbers in them are the vendors' (tokens, retries, cost)."""

from __future__ import annotations

import csv
import json
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from fleetbench._plugins import PluginHost
from fleetbench._prepare import prepare_file
from fleetbench._pricing import PricingTable
from fleetbench._runner import execute_run
from fleetbench._store import RunStore
from fleetbench.testing import FakeVendorServer, Fault, assert_secret_absent

from .conftest import FleetDir

KEY = "sk-mixed-fleet-SECRET-0123"
ANSWER = "def yes"  # passes every evaluator of the fixture's datasets (contains 'def' / 'yes')
VENDORS = {  # provider id -> (vendor, streaming)
    "openai:gpt-4o-mini": ("openai", True),
    "anthropic:claude-haiku-4-5": ("anthropic", True),
    "cohere:command-r": ("cohere", False),
    "gemini:gemini-2.5-flash": ("gemini", True),
}
TESTS_PER_PROVIDER = 16  # api-gateway: 6 coding + 2 reasoning x 2 epochs; user-service: 6


async def test_a_fleet_mixing_every_vendor_and_the_simulated_provider(
        fleet_dir: FleetDir, host: PluginHost, tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        fakes = {}
        for provider_id, (vendor, _) in VENDORS.items():
            # Each vendor's first request is rate limited: one retry per provider.
            fakes[provider_id] = await stack.enter_async_context(FakeVendorServer(
                vendor, answer=ANSWER, ttft_ms=5, itl_ms=1, api_key=KEY,
                faults=(Fault.rate_limited({"retry-after": "0"}),)))
        fleet_dir.manifest["providers"] = [
            {"id": provider_id, "base_url": fakes[provider_id].base_url, "api_key_env": "KEY",
             "stream": stream, "concurrency": 4}
            for provider_id, (_, stream) in VENDORS.items()
        ] + ["simulated:fast"]
        fleet_dir.manifest["output"]["formats"] = ["json", "jsonl", "csv"]
        fleet_dir.manifest["global_settings"] = {"max_retries": 2}
        prepared = prepare_file(fleet_dir.write(), host=host, cache_dir=tmp_path / "cache")
        with RunStore(tmp_path / "state") as store:
            outcome = await execute_run(prepared, host=host, store=store, env={"KEY": KEY})

    assert str(outcome.status) == "completed"
    for provider_id, fake in fakes.items():
        assert fake.requests == TESTS_PER_PROVIDER + 1, provider_id  # + the retried 429

    rows = [json.loads(line) for line in
            (outcome.output_dir / "results.jsonl").read_text().splitlines()]
    by_provider: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_provider.setdefault(f"{row['provider']}:{row['model']}", []).append(row)
    assert set(by_provider) == {*VENDORS, "simulated:fast"}
    for provider_id in VENDORS:
        mine = by_provider[provider_id]
        assert len(mine) == TESTS_PER_PROVIDER
        assert {row["status"] for row in mine} == {"passed"}, provider_id
        assert sum(row["retries"] for row in mine) == 1
        # Usage is the vendor's: two answer words, one token each, never an estimate.
        assert {row["output_tokens"] for row in mine} == {2}, provider_id
        if VENDORS[provider_id][1]:
            assert all(row["ttft_ms"] is not None and row["ttft_ms"] >= 5 for row in mine)

    pricing = PricingTable.shipped()
    report = json.loads((outcome.output_dir / "fleet_results.json").read_text())
    breakdown = report["provider_breakdown"]
    assert set(breakdown) == {*VENDORS, "simulated:fast"}
    with (outcome.output_dir / "providers.csv").open(newline="") as handle:
        csv_rows = {row["provider_name"]: row for row in csv.DictReader(handle)}
    assert set(csv_rows) == set(breakdown)
    for provider_id in VENDORS:
        entry = breakdown[provider_id]
        mine = by_provider[provider_id]
        assert entry["total_tests"] == TESTS_PER_PROVIDER
        assert entry["retries"] == 1
        assert entry["output_tokens"] == 2 * TESTS_PER_PROVIDER
        assert entry["input_tokens"] == sum(row["input_tokens"] for row in mine)
        vendor, model = provider_id.split(":", 1)
        price = pricing.price(vendor, model)
        assert price is not None, provider_id
        expected_cost = (entry["input_tokens"] * price.input
                         + entry["output_tokens"] * price.output) / 1e6
        assert abs(entry["total_cost"] - expected_cost) < 1e-6, provider_id
        assert int(csv_rows[provider_id]["total_tests"]) == TESTS_PER_PROVIDER
        assert float(csv_rows[provider_id]["success_rate"]) == 1.0
    assert report["fleet_summary"]["total_tests"] == 5 * TESTS_PER_PROVIDER
    assert_secret_absent(tmp_path, KEY)

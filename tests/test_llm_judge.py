"""``llm_judge`` in real fleets: the judge is the openai plugin talking over real HTTP to
a small Chat Completions server on loopback, so every layer a judge's call crosses (the
evaluator context, the lane's limits and retries, the shared client, the vendor plugin,
the store, the aggregates and the artifacts) is the one a run uses."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from fleetbench._plugins import PluginHost
from fleetbench._prepare import prepare_file
from fleetbench._pricing import Price, cost_usd
from fleetbench._runner import RunOutcome, execute_run
from fleetbench._serialize import result_from_dict
from fleetbench._store import RunStore
from fleetbench.errors import ManifestError
from fleetbench.records import Status, TestResult, Verdict
from fleetbench.testing import local_server

from .conftest import FleetDir

JUDGE = "openai:judge"
KEY = "sk-judge-secret-123"
JUDGE_USAGE = (100, 20)  # prompt and completion tokens the server reports for a judgement
JUDGE_PRICE = Price(10.0, 50.0)  # USD per million tokens
JUDGEMENT_COST = (100 * 10.0 + 20 * 50.0) / 1_000_000
RUBRIC = "Is the answer Python code?"
_ANSWER = re.compile(r"<answer>\n(.*)\n</answer>", re.DOTALL)


@dataclass
class JudgeServer:
    """OpenAI Chat Completions on 127.0.0.1. Judge prompts (recognised by the judge's
    system prompt) are answered by ``grade(system prompt, answer graded) -> (HTTP
    status, reply text)``; benchmark prompts get ``"I cannot help with that."``. Every
    judge request is kept."""

    grade: Callable[[str, str], tuple[int, str]]
    benchmark_status: Callable[[str], int] = lambda prompt: 200
    url: str = ""
    judge_requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.headers.append(request.headers.get("Authorization", ""))
        system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
        prompt = body["messages"][-1]["content"]
        status, reply, usage = self.benchmark_status(prompt), "I cannot help with that.", (12, 6)
        if system.startswith("You grade answers"):
            self.judge_requests.append(body)
            match = _ANSWER.search(prompt)
            assert match is not None
            status, reply = self.grade(system, match[1])
            usage = JUDGE_USAGE
        if status != 200:
            return web.json_response({"error": {"message": "judge overloaded",
                                                "type": "server_error"}},
                                     status=status, headers={"Retry-After": "0"})
        return web.json_response({
            "id": "cmpl-1", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                      "total_tokens": sum(usage)},
        })


def _python_or_not(system: str, answer: str) -> tuple[int, str]:
    """8/10 for an answer with ``def``, else 2/10; on a 0–1 scale, "1" to all."""
    if "from 0 to 1>" in system:
        return 200, '{"score": "1", "reason": "per case"}'
    score = 8 if "def" in answer else 2
    return 200, f'Here is my verdict:\n```json\n{{"score": {score}, "reason": "checked"}}\n```'


@pytest.fixture
async def judge_server() -> AsyncIterator[JudgeServer]:
    server = JudgeServer(_python_or_not)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.handle)
    async with local_server(app) as url:
        server.url = f"{url}/v1"
        yield server


def _judged_fleet(fleet: FleetDir, server: JudgeServer, **judge: Any) -> None:
    """One repository, the six coding tests, answered by the simulated model and by the
    judge's own model (every provider entry is benchmarked), and judged by the latter."""
    fleet.manifest["repositories"] = [{"repo_id": "api", "path": "repos/api",
                                       "scenarios": ["coding"]}]
    fleet.manifest["providers"] = [
        {"id": "simulated:fast", "params": {"zero_latency": True, "seed": 1},
         "pricing": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        {"id": JUDGE, "base_url": server.url, "api_key_env": "JUDGE_KEY", "max_retries": 1,
         "pricing": {"input_per_mtok": JUDGE_PRICE.input,
                     "output_per_mtok": JUDGE_PRICE.output}},
    ]
    fleet.manifest["scenario_profiles"]["coding"]["evaluators"] = [
        "contains", {"name": "llm_judge", "provider": JUDGE, "rubric": RUBRIC,
                     "threshold": 0.5, **judge}]
    fleet.manifest["output"]["formats"] = ["json", "jsonl", "csv"]
    del fleet.datasets["repos/user/datasets/coding-tasks.json"]


async def _run(fleet: FleetDir, host: PluginHost, tmp_path: Path) -> RunOutcome:
    prepared = prepare_file(fleet.write(), host=host, cache_dir=tmp_path / "cache")
    with RunStore(tmp_path / "state") as store:
        return await execute_run(prepared, host=host, store=store, env={"JUDGE_KEY": KEY})


def _results(outcome: RunOutcome) -> list[TestResult]:
    """The run's results as ``results.jsonl`` has them, in plan order."""
    text = (outcome.output_dir / "results.jsonl").read_text(encoding="utf-8")
    return [result_from_dict(json.loads(line)) for line in text.splitlines()]


def _judgement(result: TestResult) -> Verdict:
    return next(v for v in result.verdicts if v.evaluator == "llm_judge")


async def test_a_judge_grades_every_answer_and_its_cost_is_kept_apart(
        fleet_dir: FleetDir, host: PluginHost, tmp_path: Path,
        judge_server: JudgeServer) -> None:
    _judged_fleet(fleet_dir, judge_server)
    # A test case's own evaluators replace the scenario's: code-0 gets a 0–1 judge.
    fleet_dir.datasets["repos/api/datasets/coding-tasks.json"]["test_cases"][0]["evaluators"] = [
        {"name": "llm_judge", "provider": JUDGE, "rubric": "Per-case rubric", "scale": 1}]
    outcome = await _run(fleet_dir, host, tmp_path)
    results = _results(outcome)
    assert len(results) == 12
    for result in results:
        judged = _judgement(result)
        assert not judged.error, judged.detail
        assert judged.cost_usd == pytest.approx(JUDGEMENT_COST)
        assert (judged.input_tokens, judged.output_tokens) == JUDGE_USAGE
        if result.item.test_id == "code-0":
            assert [v.evaluator for v in result.verdicts] == ["llm_judge"]
            assert (judged.score, judged.detail) == (1.0, f"1/1 by {JUDGE}: per case")
            continue
        fast = result.item.provider == "simulated"
        assert judged.score == (0.8 if fast else 0.2)
        assert judged.detail == f"{8 if fast else 2}/10 by {JUDGE}: checked"
        assert result.status is (Status.PASSED if fast else Status.FAILED)
        if fast:  # the tested model's cost is its own, never the judge's
            assert result.usage is not None
            assert result.cost_usd == cost_usd(result.usage, Price(1.0, 2.0))

    summary = outcome.summary
    assert summary.fleet.evaluation_cost_usd == pytest.approx(12 * JUDGEMENT_COST)
    assert summary.by_provider["simulated:fast"].evaluation_cost_usd == pytest.approx(
        6 * JUDGEMENT_COST)
    assert summary.fleet.cost_usd == pytest.approx(sum(r.cost_usd or 0 for r in results))

    # What the judge was sent: the rubric, the question, the reference and the answer.
    requests = judge_server.judge_requests
    assert len(requests) == 12
    scenario_request = next(r for r in requests if RUBRIC in r["messages"][1]["content"])
    assert scenario_request["model"] == "judge"
    assert scenario_request["temperature"] == 0
    assert scenario_request["max_tokens"] == 300
    assert "a number from 0 to 10" in scenario_request["messages"][0]["content"]
    assert re.fullmatch(r"<rubric>\nIs the answer Python code\?\n</rubric>\n\n"
                        r"<question>\nWrite Python code #\d\n</question>\n\n"
                        r"<reference>\ndef\n</reference>\n\n<answer>\n.*\n</answer>",
                        scenario_request["messages"][1]["content"], re.DOTALL)
    per_case = [r for r in requests if "Per-case rubric" in r["messages"][1]["content"]]
    assert len(per_case) == 2  # code-0 on both providers
    assert "a number from 0 to 1>" in per_case[0]["messages"][0]["content"]
    assert set(judge_server.headers) == {f"Bearer {KEY}"}

    # The artifacts carry the evaluation cost apart from the tested models' cost.
    fleet_json = json.loads((outcome.output_dir / "fleet_results.json").read_text())
    assert fleet_json["fleet_summary"]["evaluation_cost_usd"] == pytest.approx(
        12 * JUDGEMENT_COST)
    assert fleet_json["fleet_summary"]["total_cost"] == pytest.approx(summary.fleet.cost_usd)
    with (outcome.output_dir / "fleet_summary.csv").open(encoding="utf-8") as rows:
        row = next(csv.DictReader(rows))
    assert row["evaluation_cost_usd"] == f"{12 * JUDGEMENT_COST:.6f}"
    for path in outcome.output_dir.iterdir():
        assert KEY not in path.read_text(encoding="utf-8"), path.name


async def test_an_unreadable_judgement_is_an_error_that_still_costs(
        fleet_dir: FleetDir, host: PluginHost, tmp_path: Path,
        judge_server: JudgeServer) -> None:
    _judged_fleet(fleet_dir, judge_server)
    judge_server.grade = lambda system, answer: (200, "Looks fine to me, nice work!")
    outcome = await _run(fleet_dir, host, tmp_path)
    results = _results(outcome)
    fast = [r for r in results if r.item.provider == "simulated"]
    assert fast
    assert all(r.verdicts[0].passed for r in fast)  # contains passed …
    for result in results:  # … but a judge that could not judge never makes a pass
        judged = _judgement(result)
        assert (judged.error, judged.passed, result.status) == (True, False, Status.FAILED)
        assert judged.detail.startswith("the judge's answer has no usable score")
        assert "'Looks fine to me, nice work!'" in judged.detail
        assert judged.cost_usd == pytest.approx(JUDGEMENT_COST)
    assert outcome.summary.fleet.evaluation_cost_usd == pytest.approx(12 * JUDGEMENT_COST)


async def test_a_failing_judge_is_retried_then_reported_as_an_evaluator_error(
        fleet_dir: FleetDir, host: PluginHost, tmp_path: Path,
        judge_server: JudgeServer) -> None:
    _judged_fleet(fleet_dir, judge_server)
    judge_server.grade = lambda system, answer: (503, "")
    outcome = await _run(fleet_dir, host, tmp_path)
    results = _results(outcome)
    assert len(judge_server.judge_requests) == 2 * len(results)  # max_retries: 1
    for result in results:
        judged = _judgement(result)
        assert (judged.error, judged.passed, judged.cost_usd) == (True, False, None)
        assert re.match(rf"the judge {JUDGE} failed \(\w+\): .*judge overloaded",
                        judged.detail), judged.detail
        assert result.status is Status.FAILED
    assert outcome.summary.fleet.evaluation_cost_usd == 0.0


async def test_the_cost_cap_stops_judging_before_it_could_be_exceeded(
        fleet_dir: FleetDir, host: PluginHost, tmp_path: Path,
        judge_server: JudgeServer) -> None:
    cap = 0.03  # a call's worst case is ≈ 0.021 (300 output tokens at $50/M), its cost 0.002
    _judged_fleet(fleet_dir, judge_server, max_cost_usd=cap)
    fleet_dir.manifest["global_settings"] = {"max_in_flight": 1}
    outcome = await _run(fleet_dir, host, tmp_path)
    verdicts = [_judgement(r) for r in _results(outcome)]
    judged = [v for v in verdicts if not v.error]
    refused = [v for v in verdicts if v.error]
    assert judged
    assert refused
    assert len(judge_server.judge_requests) == len(judged)
    assert all(v.cost_usd == pytest.approx(JUDGEMENT_COST) for v in judged)
    for verdict in refused:
        assert (verdict.passed, verdict.cost_usd) == (False, None)
        assert verdict.detail.startswith(f"not judged: cost cap ${cap:g} reached: the run's "
                                         f"judging has spent $")
    spent = outcome.summary.fleet.evaluation_cost_usd
    assert spent == pytest.approx(len(judged) * JUDGEMENT_COST)
    assert spent <= cap
    # Each refusal was right: the call's worst case would have gone past the cap.
    worst = re.search(r"could cost up to \$([\d.]+)", refused[0].detail)
    assert worst is not None
    assert spent + float(worst[1]) > cap


@pytest.mark.parametrize(("judge", "where", "message"), [
    ({"provider": "openai:other"}, "scenario_profiles.coding.evaluators[1]",
     "'openai:other' is not one of the manifest's providers (simulated:fast, openai:judge)"),
    ({"max_cost_usd": 1.0}, "scenario_profiles.coding.evaluators[1]",
     "max_cost_usd needs a price for openai:judge"),
])
def test_a_judge_the_run_cannot_use_fails_validation(
        fleet_dir: FleetDir, host: PluginHost, tmp_path: Path, judge: dict[str, Any],
        where: str, message: str) -> None:
    _judged_fleet(fleet_dir, JudgeServer(_python_or_not, url="http://127.0.0.1:9/v1"),
                  **judge)
    del fleet_dir.manifest["providers"][1]["pricing"]  # the shipped table has no "judge"
    with pytest.raises(ManifestError) as caught:
        prepare_file(fleet_dir.write(), host=host, cache_dir=tmp_path / "cache")
    problems = [(p.location, p.message) for p in caught.value.problems]
    assert any(w == where and message in m for w, m in problems), problems


async def test_a_resumed_run_counts_what_its_judging_spent_before(
        fleet_dir: FleetDir, host: PluginHost, tmp_path: Path,
        judge_server: JudgeServer) -> None:
    # Input is free, so a call's worst case is exactly its 300 output tokens ($0.015) and
    # a judgement costs 20 of them ($0.001): the cap admits calls while spending <= 0.0035,
    # four in all.
    _judged_fleet(fleet_dir, judge_server, max_cost_usd=0.0185)
    fleet_dir.manifest["providers"] = [{**fleet_dir.manifest["providers"][1], "concurrency": 1,
                                        "pricing": {"input_per_mtok": 0.0,
                                                    "output_per_mtok": 50.0}}]
    fleet_dir.manifest["global_settings"] = {"continue_on_failure": False}
    judge_server.benchmark_status = lambda prompt: 400 if prompt.endswith("#2") else 200
    first = await _run(fleet_dir, host, tmp_path)
    assert first.status.value == "failed"  # stopped at code-2, after judging code-0 and 1
    assert len(judge_server.judge_requests) == 2

    judge_server.benchmark_status = lambda prompt: 200
    second = await _run(fleet_dir, host, tmp_path)
    assert (second.run_id, second.status.value) == (first.run_id, "completed")
    verdicts = {r.item.test_id: _judgement(r) for r in _results(second)
                if r.status is not Status.ERROR}
    assert [k for k, v in verdicts.items() if not v.error] == ["code-0", "code-1", "code-3",
                                                              "code-4"]
    assert verdicts["code-5"].detail.startswith("not judged: cost cap $0.0185 reached: the "
                                                "run's judging has spent $0.004000")
    assert len(judge_server.judge_requests) == 4
    assert second.summary.fleet.evaluation_cost_usd == pytest.approx(0.004)


async def test_a_judge_only_provider_grades_without_being_benchmarked(
        fleet_dir: FleetDir, host: PluginHost, tmp_path: Path,
        judge_server: JudgeServer) -> None:
    _judged_fleet(fleet_dir, judge_server)
    fleet_dir.manifest["providers"][1]["judge_only"] = True
    outcome = await _run(fleet_dir, host, tmp_path)
    results = _results(outcome)
    assert {r.item.provider for r in results} == {"simulated"}
    assert len(results) == 6
    assert len(judge_server.judge_requests) == 6
    assert len(judge_server.headers) == 6  # no benchmark prompt reached the judge's server
    assert set(outcome.summary.by_provider) == {"simulated:fast"}
    assert outcome.summary.fleet.evaluation_cost_usd == pytest.approx(6 * JUDGEMENT_COST)


def test_a_fleet_of_judges_only_is_refused(fleet_dir: FleetDir, host: PluginHost,
                                           tmp_path: Path) -> None:
    fleet_dir.manifest["providers"] = [{"id": "simulated:fast", "judge_only": True}]
    with pytest.raises(ManifestError, match="every provider is judge_only"):
        prepare_file(fleet_dir.write(), host=host, cache_dir=tmp_path / "cache")

"""``fleetbench compare`` and the ``compare`` exporter over two real runs.

Two runs of one fleet differ in one provider's simulated accuracy, so that provider's
tests regress while the others stay as they were; ids carry HTML and Markdown to check
that every output escapes them. The CLI is driven in-process through click's runner.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from fleetbench._cli import main
from fleetbench._compare import Delta, Gate, GroupDelta, TestChanges
from fleetbench._plugins import PluginHost
from fleetbench._prepare import prepare_file
from fleetbench._runner import RunOutcome, execute_run
from fleetbench._store import RunStore

from .conftest import FleetDir

EVIL_REPO = "users<img src=x onerror=alert(1)>"
EVIL_TEST = "x|<script>alert(1)"
EVIL_CATEGORY = "cat|<script>alert(1)</script>"
FAILING = {"failed", "error", "timeout"}


@dataclass(frozen=True)
class TwoRuns:
    root: Path
    state: Path
    before: RunOutcome
    after: RunOutcome


def _fleet(root: Path, slow_accuracy: float) -> FleetDir:
    fleet = FleetDir(root)
    fleet.manifest["repositories"][1]["repo_id"] = EVIL_REPO
    case = fleet.datasets["repos/user/datasets/coding-tasks.json"]["test_cases"][0]
    case["id"], case["category"] = EVIL_TEST, EVIL_CATEGORY
    fleet.manifest["providers"] = [
        {"id": "simulated:fast", "params": {"zero_latency": True, "seed": 1},
         "pricing": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        {"id": "simulated:slow", "params": {"seed": 2, "accuracy": slow_accuracy,
                                            "zero_latency": True},
         "pricing": {"input_per_mtok": 3.0, "output_per_mtok": 6.0}},
    ]
    fleet.manifest["output"]["formats"] = ["json", "jsonl", "markdown", "compare"]
    return fleet


async def _run(fleet: FleetDir, host: PluginHost, state: Path, cache: Path) -> RunOutcome:
    prepared = prepare_file(fleet.write(), host=host, cache_dir=cache)
    with RunStore(state) as store:
        return await execute_run(prepared, host=host, store=store)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, host: PluginHost) -> TwoRuns:
    """Run A (every answer right) then run B (the slow provider right 30 % of the time)."""
    root = tmp_path_factory.mktemp("compare")
    state, cache = root / "state", root / "cache"
    before = asyncio.run(_run(_fleet(root, 1.0), host, state, cache))
    after = asyncio.run(_run(_fleet(root, 0.3), host, state, cache))
    assert before.run_id != after.run_id
    assert before.output_dir.parent == after.output_dir.parent  # same base_dir
    return TwoRuns(root, state, before, after)


def _cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _compare(runs: TwoRuns, *args: str, a: str | None = None, b: str | None = None) -> Result:
    return _cli("compare", a or runs.before.run_id, b or runs.after.run_id,
                "--state-dir", str(runs.state), *args)


def _statuses(outcome: RunOutcome) -> dict[str, str]:
    lines = (outcome.output_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()
    return {row["key"]: row["status"] for row in map(json.loads, lines)}


def _expected_regressions(runs: TwoRuns) -> list[str]:
    before, after = _statuses(runs.before), _statuses(runs.after)
    return [key for key, status in after.items()
            if status in FAILING and before.get(key) == "passed"]


# ──────────────────────────────────────────────────────────────────────────── the CLI


def test_json_shows_deltas_per_group_and_every_regression(runs: TwoRuns) -> None:
    result = _compare(runs, "--format", "json")
    assert result.exit_code == 1, result.output  # regressions, threshold 0
    data = json.loads(result.stdout)
    expected = _expected_regressions(runs)
    assert expected  # the slow provider got worse
    assert [r["key"] for r in data["regressed"]] == expected
    assert {r["provider"] for r in data["regressed"]} == {"simulated:slow"}
    assert all(r["before"] == "passed" and r["after"] in FAILING and r["detail"]
               for r in data["regressed"])
    assert data["tests"] == {"matched": 32, "new": 0, "removed": 0,
                             "regressed": len(expected), "fixed": 0}
    a, b = runs.before.summary, runs.after.summary
    fleet = data["fleet"]
    assert (fleet["tests_before"], fleet["tests_after"]) == (a.fleet.total, b.fleet.total)
    assert fleet["success_rate"]["before"] == pytest.approx(a.fleet.success_rate)
    assert fleet["success_rate"]["after"] == pytest.approx(b.fleet.success_rate)
    assert fleet["success_rate"]["change_pp"] == pytest.approx(
        (b.fleet.success_rate - a.fleet.success_rate) * 100)
    assert fleet["latency_p95"]["after"] == pytest.approx(b.fleet.latency_ms.p95)
    assert fleet["cost_usd"]["change"] == pytest.approx(b.fleet.cost_usd - a.fleet.cost_usd)
    providers = {p["name"]: p for p in data["providers"]}
    assert providers["simulated:fast"]["success_rate"]["change"] == pytest.approx(0.0)
    assert providers["simulated:slow"]["success_rate"]["change"] < 0
    repos = {r["name"] for r in data["repositories"]}
    assert repos == set(a.by_repository) == {"api-gateway", EVIL_REPO}
    assert {c["name"] for c in data["categories"]} == set(a.by_category)
    assert data["gate"] == {"max_regressions": 0, "max_drop_pp": None, "failed": True,
                            "reasons": [f"{len(expected)} test(s) regressed (passed → "
                                        "failed); at most 0 allowed"]}
    assert "regression:" in result.stderr


def test_exit_code_follows_the_threshold(runs: TwoRuns) -> None:
    regressed = len(_expected_regressions(runs))
    assert _compare(runs, "--threshold", str(regressed), "--format", "json").exit_code == 0
    assert _compare(runs, "--threshold", str(regressed - 1),
                    "--format", "json").exit_code == 1
    drop = (runs.before.summary.fleet.success_rate
            - runs.after.summary.fleet.success_rate) * 100
    assert _compare(runs, "--threshold", "999", "--max-drop", f"{drop - 0.01:.2f}",
                    "--format", "json").exit_code == 1
    assert _compare(runs, "--threshold", "999", "--max-drop", f"{drop + 0.01:.2f}",
                    "--format", "json").exit_code == 0
    same = _compare(runs, "--format", "json", b=runs.before.run_id)  # a run against itself
    assert same.exit_code == 0
    assert json.loads(same.stdout)["tests"]["regressed"] == 0


def test_swapping_the_runs_turns_regressions_into_fixes(runs: TwoRuns) -> None:
    result = _compare(runs, "--format", "json", a=runs.after.run_id, b=runs.before.run_id)
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["regressed"] == []
    assert sorted(f["key"] for f in data["fixed"]) == sorted(_expected_regressions(runs))


def test_artifact_folders_compare_like_stored_runs(runs: TwoRuns, tmp_path: Path) -> None:
    stored = json.loads(_compare(runs, "--format", "json").stdout)
    folders = _compare(runs, "--format", "json", a=str(runs.before.output_dir),
                       b=str(runs.after.output_dir))
    assert folders.exit_code == 1
    data = json.loads(folders.stdout)
    assert data["baseline"]["source"] == str(runs.before.output_dir)
    for side in ("baseline", "current"):
        data[side]["source"] = stored[side]["source"]
    assert data == stored
    # Without results.jsonl, fleet_results.json is read: the same tests and outcomes.
    copy = tmp_path / "only-json"
    copy.mkdir()
    for name in ("fleet_results.json", "run.json"):
        (copy / name).write_bytes((runs.after.output_dir / name).read_bytes())
    legacy = json.loads(_compare(runs, "--format", "json", b=str(copy)).stdout)
    assert [r["key"] for r in legacy["regressed"]] == [r["key"] for r in stored["regressed"]]
    assert legacy["fleet"]["success_rate"] == stored["fleet"]["success_rate"]


def test_bad_runs_exit_2_with_a_clear_message(runs: TwoRuns, tmp_path: Path) -> None:
    unknown = _compare(runs, a="no-such-run")
    assert unknown.exit_code == 2
    assert "'no-such-run' is neither an artifact folder nor a run in the run store" \
        in unknown.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _compare(runs, a=str(empty))
    assert result.exit_code == 2
    assert "holds neither results.jsonl nor fleet_results.json" in result.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "results.jsonl").write_text('{"key": 1}\n', encoding="utf-8")
    result = _compare(runs, a=str(broken))
    assert result.exit_code == 2
    assert "results.jsonl:1: not a fleetbench result" in result.stderr
    no_store = _cli("compare", "a", "b", "--state-dir", str(tmp_path / "nothing"))
    assert no_store.exit_code == 2
    assert "no run store" in no_store.stderr
    assert not (tmp_path / "nothing").exists()  # looking never creates a store


def test_html_is_one_escaped_self_contained_page(runs: TwoRuns, tmp_path: Path) -> None:
    out = tmp_path / "compare.html"
    assert _compare(runs, "--format", "html", "--output", str(out)).exit_code == 1
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page
    assert "<img" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "cat|&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r"<[^>]*\s(?:src|href)=|<link", page)  # nothing loaded from elsewhere
    for key in _expected_regressions(runs):
        assert key.replace("<", "&lt;").replace(">", "&gt;") in page


def test_markdown_escapes_ids_and_keeps_tables_whole(runs: TwoRuns) -> None:
    result = _compare(runs, "--format", "markdown")
    text = result.stdout
    assert "<script" not in text
    assert "<img" not in text
    assert "users&lt;img src=x onerror=alert(1)&gt;" in text
    assert "cat\\|&lt;script&gt;alert(1)&lt;/script&gt;" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    for row in rows:
        cells = re.split(r"(?<!\\)\|", row)[1:-1]
        assert len(cells) in (3, 8)  # test tables and group tables, never split by an id
    assert text.startswith("## ❌ fleetbench compare:")


def test_table_is_printed_with_the_verdict(runs: TwoRuns, tmp_path: Path) -> None:
    result = _compare(runs)
    assert result.exit_code == 1
    assert "Regressed tests" in result.stdout
    assert "gate failed" in result.stdout
    assert EVIL_REPO in result.stdout  # shown literally, not read as rich markup
    out = tmp_path / "table.txt"
    assert _compare(runs, "--output", str(out), "--threshold", "999").exit_code == 0
    assert "gate passed" in out.read_text(encoding="utf-8")


# ─────────────────────────────────────────────────────────────────── the exporter


def test_the_compare_exporter_compares_with_the_previous_run(runs: TwoRuns) -> None:
    first = json.loads((runs.before.output_dir / "compare.json").read_text(encoding="utf-8"))
    assert first["baseline"] is None
    assert "no earlier completed run of fleet 'test-fleet'" in first["note"]
    exported = json.loads((runs.after.output_dir / "compare.json").read_text(encoding="utf-8"))
    assert exported["baseline"]["run_id"] == runs.before.run_id
    assert exported["note"] == "Baseline: the previous completed run of this fleet."
    cli = json.loads(_compare(runs, "--format", "json").stdout)
    assert [r["key"] for r in exported["regressed"]] == [r["key"] for r in cli["regressed"]]
    assert exported["fleet"] == cli["fleet"]
    markdown = (runs.after.output_dir / "compare.md").read_text(encoding="utf-8")
    assert markdown.startswith("## ❌ fleetbench compare:")
    assert "<script" not in markdown
    summary = (runs.after.output_dir / "summary.md").read_text(encoding="utf-8")
    regressed = len(cli["regressed"])
    assert f"### Regressions against {runs.before.run_id}: {regressed} regressed, 0 fixed" \
        in summary


@pytest.mark.parametrize(("value", "expected"), [
    ("{before_id}", "Baseline: named by FLEETBENCH_COMPARE_BASELINE."),
    ("{before_dir}", "Baseline: named by FLEETBENCH_COMPARE_BASELINE."),
    ("{after_id}", "names this run itself"),
    ("no-such-run", "names no artifact folder"),
])
def test_the_baseline_can_be_named(runs: TwoRuns, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch, value: str,
                                   expected: str) -> None:
    named = value.format(before_id=runs.before.run_id, after_id=runs.after.run_id,
                         before_dir=runs.before.output_dir)
    monkeypatch.setenv("FLEETBENCH_COMPARE_BASELINE", named)
    # A run id names a folder next to the one written to: write next to the runs.
    dest = runs.after.output_dir.parent / f"again-{tmp_path.name}"
    try:
        result = _cli("report", runs.after.run_id, "--state-dir", str(runs.state),
                      "--format", "compare", "--dest", str(dest))
        assert result.exit_code == 0, result.output
        data: dict[str, Any] = json.loads((dest / "compare.json").read_text(encoding="utf-8"))
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    assert expected in data["note"]
    if "named by" in expected:
        assert data["baseline"]["run_id"] == runs.before.run_id
    else:
        assert data["baseline"] is None


# ───────────────────────────────────────────────────────────────────── pure logic


def test_the_gate_counts_regressions_and_success_drops() -> None:
    def fleet(before: float, after: float) -> GroupDelta:
        none = Delta(None, None)
        return GroupDelta("fleet", 10, 10, Delta(before, after), none, none, none, none, none)

    two = TestChanges(regressed=(None, None))  # type: ignore[arg-type]  # only counted
    assert Gate().failures(fleet(1.0, 1.0), TestChanges()) == ()
    assert len(Gate().failures(fleet(1.0, 1.0), two)) == 1
    assert Gate(max_regressions=2).failures(fleet(1.0, 1.0), two) == ()
    assert Gate(max_regressions=9, max_drop_pp=5).failures(fleet(0.9, 0.86), two) == ()
    (reason,) = Gate(max_regressions=9, max_drop_pp=5).failures(fleet(0.9, 0.84), two)
    assert reason == "the fleet success rate dropped by 6.00 pp; at most 5 pp allowed"

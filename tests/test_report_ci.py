"""The CI exporters junit (junit.xml) and markdown (summary.md), on real files.

Results are built by hand (every status, hostile ids and details), their summary by
the real aggregator; the exporters are driven through their registered specs exactly
as the core drives them: ``open``, ``write`` per result in plan order, ``finalize``.
The JUnit document is checked by parsing it with ``xml.etree``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from fleetbench._builtins._ci import _junit
from fleetbench._builtins.report_ci import fleetbench_register_exporters
from fleetbench._compare import measure
from fleetbench._prepare import prepare_file
from fleetbench._runner import execute_run
from fleetbench._store import RunStore
from fleetbench.plugin import RunInfo
from fleetbench.records import (
    GenerationSettings,
    ProviderResponse,
    Status,
    Summary,
    TestResult,
    Usage,
    Verdict,
    WorkItem,
)

STARTED = "2025-03-01T10:00:00.123456Z"
EVIL_REPO = "evil|<script>alert(1)</script>"  # never a real repo id ('/'), fine for exporters
EVIL_TEST = 'x"<b>&amp;\x01|*_[a](b) @team $x$'


def make_result(index: int, status: Status = Status.PASSED, *, repo: str = "repo-a",
                provider: str = "sim", model: str = "m", scenario: str = "coding",
                test_id: str | None = None, category: str | None = "coding",
                detail: str = "", total_ms: float = 1500.0, answer: str = "the answer",
                error: str | None = None, error_kind: str | None = None) -> TestResult:
    test_id = test_id or f"t{index}"
    item = WorkItem(key=f"{repo}/{scenario}/{provider}:{model}/{test_id}", index=index,
                    repo_id=repo, scenario=scenario, provider=provider, model=model,
                    test_id=test_id, epoch=1, prompt="p", settings=GenerationSettings(),
                    stream=False, category=category, expected="x")
    answered = status in (Status.PASSED, Status.FAILED)
    verdicts = (Verdict("contains", status is Status.PASSED,
                        1.0 if status is Status.PASSED else 0.0, detail),) if answered else ()
    usage = Usage(10, 5) if answered else None
    return TestResult(
        item=item, status=status, started_at=STARTED, finished_at=STARTED, queue_ms=1.0,
        latency_ms=total_ms if answered else None, total_ms=total_ms, usage=usage,
        cost_usd=0.001 if answered else None,
        response=ProviderResponse(answer, usage, "stop") if answered else None,
        verdicts=verdicts, error=error, error_kind=error_kind)


def make_run(folder: Path, *, formats: Sequence[str] = ("junit", "markdown"),
             save_responses: bool = True, warnings: Sequence[str] = ()) -> RunInfo:
    return RunInfo(run_id="fleet-0123456789ab", fleet_id="fleet", status="completed",
                   output_dir=folder,
                   manifest={"output": {"formats": list(formats), "base_dir": "out"}},
                   created_at=STARTED, started_at=STARTED,
                   finished_at="2025-03-01T10:05:00Z", planned=0,
                   save_responses=save_responses, pricing_version="test",
                   warnings=tuple(warnings))


def export(name: str, results: Sequence[TestResult], run: RunInfo) -> tuple[Summary, Path]:
    spec = {s.name: s for s in fleetbench_register_exporters()}[name]
    exporter = spec.factory()
    exporter.open(run)
    for result in results:
        exporter.write(result)
    summary = measure(results)
    (path,) = exporter.finalize(summary, run)
    assert path.name == spec.files[0]
    return summary, path


def mixed_results() -> list[TestResult]:
    """Every status, over two repositories and two providers, interleaved."""
    results = []
    statuses = [Status.PASSED, Status.FAILED, Status.ERROR, Status.TIMEOUT, Status.SKIPPED,
                Status.CANCELLED, Status.PASSED]
    for i in range(28):
        status = statuses[i % len(statuses)]
        results.append(make_result(
            i, status, repo=("repo-a", EVIL_REPO)[i % 2], model=("m1", "m2")[(i // 2) % 2],
            test_id=EVIL_TEST + str(i) if i == 8 else None,
            detail="line one\nline <two> & \x07bell" if status is Status.FAILED else "",
            error={Status.ERROR: "HTTP 503 <overloaded>",
                   Status.TIMEOUT: "no answer in 30 s"}.get(status),
            error_kind="transient" if status is Status.ERROR else None,
            total_ms=100.0 * (i + 1)))
    return results


# ─────────────────────────────────────────────────────────────────────────── junit


def _int(element: ET.Element, name: str) -> int:
    return int(element.attrib[name])


def test_junit_counts_equal_the_summary_overall_and_per_suite(tmp_path: Path) -> None:
    results = mixed_results()
    summary, path = export("junit", results, make_run(tmp_path))
    root = ET.parse(path).getroot()
    fleet = summary.fleet
    assert root.tag == "testsuites"
    assert (_int(root, "tests"), _int(root, "failures"), _int(root, "errors"),
            _int(root, "skipped")) == (fleet.total, fleet.failed, fleet.error + fleet.timeout,
                                       fleet.skipped + fleet.cancelled)
    suites = root.findall("testsuite")
    assert len(suites) == len(summary.by_repository_provider) == 4
    for suite in suites:
        props = {p.attrib["name"]: p.attrib["value"] for p in suite.iter("property")}
        stats = summary.by_repository_provider[(props["fleetbench.repository"],
                                                props["fleetbench.provider"])]
        cases = suite.findall("testcase")
        assert _int(suite, "tests") == len(cases) == stats.total
        assert _int(suite, "failures") == stats.failed == len(
            [c for c in cases if c.find("failure") is not None])
        assert _int(suite, "errors") == stats.error + stats.timeout == len(
            [c for c in cases if c.find("error") is not None])
        assert _int(suite, "skipped") == stats.skipped + stats.cancelled == len(
            [c for c in cases if c.find("skipped") is not None])
        assert suite.attrib["timestamp"] == "2025-03-01T10:00:00"
        assert float(suite.attrib["time"]) == pytest.approx(
            sum(float(c.attrib["time"]) for c in cases), abs=0.002)
        assert props["fleetbench.run_id"] == "fleet-0123456789ab"
    assert sum(_int(s, "tests") for s in suites) == _int(root, "tests")


def test_junit_testcases_name_keys_and_carry_escaped_reasons(tmp_path: Path) -> None:
    results = mixed_results()
    _, path = export("junit", results, make_run(tmp_path))
    text = path.read_text(encoding="utf-8")
    assert "<script>" not in text
    assert "\x01" not in text
    assert "\x07" not in text
    cases = {c.attrib["name"]: c for c in ET.parse(path).getroot().iter("testcase")}
    # Ids read back unchanged, but for characters XML cannot hold (U+FFFD instead).
    by_key = {r.key.replace("\x01", "\ufffd"): r for r in results}
    assert set(cases) == set(by_key)
    assert any(EVIL_TEST.replace("\x01", "\ufffd") in key for key in cases)
    for key, case in cases.items():
        item = by_key[key].item
        assert case.attrib["classname"] == f"{item.repo_id}.{item.scenario}.{item.provider_key}"
        assert float(case.attrib["time"]) == pytest.approx(by_key[key].total_ms / 1000)
    failed = next(c for k, c in cases.items() if by_key[k].status is Status.FAILED)
    failure = failed.find("failure")
    assert failure is not None
    assert failure.attrib["type"] == "failed"
    assert failure.attrib["message"] == "contains: line one\nline <two> & \ufffdbell"
    assert "FAILED contains (score 0)" in (failure.text or "")
    assert "answer: the answer" in (failure.text or "")
    errored = next(c for k, c in cases.items() if by_key[k].status is Status.ERROR)
    error = errored.find("error")
    assert error is not None
    assert (error.attrib["type"], error.attrib["message"]) == (
        "transient", "transient: HTTP 503 <overloaded>")
    timed_out = next(c for k, c in cases.items() if by_key[k].status is Status.TIMEOUT)
    assert timed_out.find("error").attrib["type"] == "timeout"  # type: ignore[union-attr]
    cancelled = next(c for k, c in cases.items() if by_key[k].status is Status.CANCELLED)
    assert cancelled.find("skipped").attrib["message"] == "cancelled"  # type: ignore[union-attr]
    assert len(text.splitlines()) < len(results) + 40  # one line per testcase


def test_junit_leaves_answers_out_when_responses_are_not_saved(tmp_path: Path) -> None:
    results = [make_result(0, Status.FAILED, detail="nope", answer="SECRET-ANSWER")]
    _, path = export("junit", results, make_run(tmp_path, save_responses=False))
    assert "SECRET-ANSWER" not in path.read_text(encoding="utf-8")


def test_junit_streams_testcases_to_disk_and_cleans_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_junit, "_SPOOL_CHARS", 2_000)  # a tiny buffer: spill early
    exporter = _junit.JunitExporter()
    run = make_run(tmp_path)
    exporter.open(run)
    results = mixed_results() * 20
    for result in results:
        exporter.write(result)
        assert exporter._state is not None
        assert exporter._state.spool.held_chars <= 2_500
    spools = list(tmp_path.glob(".junit.xml.*.spool"))
    assert len(spools) == 1
    assert list(spools[0].iterdir())
    exporter.finalize(measure(results), run)
    assert not list(tmp_path.glob(".junit.xml.*"))  # no spool, no temporary file
    assert len(ET.parse(tmp_path / "junit.xml").getroot().findall(".//testcase")) == 560


def test_junit_abort_writes_nothing(tmp_path: Path) -> None:
    exporter = _junit.JunitExporter()
    exporter.open(make_run(tmp_path))
    exporter.write(make_result(0))
    exporter.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_junit_exports_the_same_bytes_twice(tmp_path: Path) -> None:
    results = mixed_results()
    _, first = export("junit", results, make_run(tmp_path / "a"))
    _, second = export("junit", results, make_run(tmp_path / "b"))
    assert first.read_bytes() == second.read_bytes()


# ──────────────────────────────────────────────────────────────────────── markdown


def _table_rows(text: str, heading: str) -> list[str]:
    """The body rows of the table under ``### heading``."""
    section = text.split(f"### {heading}", 1)[1].split("\n### ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ")][2:]


def _cells(row: str) -> list[str]:
    """A row split at its unescaped pipes."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]


def test_summary_shows_headline_providers_failing_repositories_and_failures(
        tmp_path: Path) -> None:
    results = mixed_results()
    summary, path = export("markdown", results, make_run(tmp_path, warnings=["w <1>"]))
    text = path.read_text(encoding="utf-8")
    fleet = summary.fleet
    assert text.startswith(f"## ⚠️ fleetbench: fleet: {fleet.success_rate * 100:.1f}% of "
                           f"{fleet.total} tests passed")
    headline = _cells(text.split("| ---:", 1)[1].splitlines()[1])
    assert headline[:5] == [str(fleet.passed), str(fleet.failed), str(fleet.error),
                            str(fleet.timeout), str(fleet.skipped + fleet.cancelled)]
    providers = [_cells(r) for r in _table_rows(text, "Providers")]
    assert [(p[0], int(p[1])) for p in providers] == [
        (name.replace("_", "\\_"), stats.total) for name, stats in summary.by_provider.items()]
    repos = _table_rows(text, "Failing repositories")
    assert len(repos) == 2
    assert all(len(_cells(r)) == 5 for r in repos)
    failures = [_cells(r) for r in _table_rows(text, "Failures (")]
    failing = [r for r in results if r.status in (Status.FAILED, Status.ERROR, Status.TIMEOUT)]
    assert len(failures) == 10
    assert f"### Failures ({len(failing)})" in text
    assert [f[1] for f in failures] == [r.status.value for r in failing[:10]]
    assert f"… and {len(failing) - 10} more" in text
    assert "- w &lt;1&gt;" in text  # warnings, escaped
    assert "Regressions" not in text  # compare is not among the formats


def test_summary_escapes_user_text(tmp_path: Path) -> None:
    results = [make_result(0, Status.FAILED, repo=EVIL_REPO, test_id=EVIL_TEST,
                           detail="a|b <script>x</script> *c* @d\nnext line")]
    _, path = export("markdown", results, make_run(tmp_path))
    text = path.read_text(encoding="utf-8")
    assert "<script>" not in text
    assert "<b>" not in text
    assert "\x01" not in text
    assert "&lt;script&gt;" in text
    assert "@&#8203;team" in text
    assert "@&#8203;d" in text
    for heading, columns in (("Failing repositories", 5), ("Failures (", 3)):
        (row,) = _table_rows(text, heading)
        assert len(_cells(row)) == columns  # a '|' in user text never splits a cell
    (failure,) = _table_rows(text, "Failures (")
    assert _cells(failure)[2] == ("contains: a\\|b &lt;script&gt;x&lt;/script&gt; \\*c\\* "
                                  "@&#8203;d next line")


def test_summary_fits_a_pull_request_comment_whatever_the_run(tmp_path: Path) -> None:
    long = "why " * 500
    results = [make_result(i, Status.FAILED, repo=f"repo-{i % 300}-{'r' * 100}",
                           model=f"model-{i % 60}-{'m' * 100}", test_id=f"{'t' * 200}{i}",
                           detail=long) for i in range(3000)]
    _, path = export("markdown", results, make_run(tmp_path, warnings=[long] * 50))
    text = path.read_text(encoding="utf-8")
    assert len(text) < 65_536
    assert "… and 35 more (providers.csv lists all)" in text
    assert "… and 290 more (repositories.csv lists all)" in text


def test_summary_of_a_clean_run_has_no_failure_sections(tmp_path: Path) -> None:
    _, path = export("markdown", [make_result(i) for i in range(3)], make_run(tmp_path))
    text = path.read_text(encoding="utf-8")
    assert text.startswith("## ✅ fleetbench: fleet: 100.0% of 3 tests passed")
    assert "Failing repositories" not in text
    assert "Failures" not in text


def test_both_exporters_are_registered_with_their_files(host: Any) -> None:
    assert host.exporters["junit"].files == ("junit.xml",)
    assert host.exporters["markdown"].files == ("summary.md",)
    assert host.exporters["compare"].files == ("compare.md", "compare.json")


async def test_a_real_run_exports_both_in_the_export_worker(
        fleet_dir: Any, host: Any, tmp_path: Path) -> None:
    fleet_dir.manifest["providers"] = [
        {"id": "simulated:fast", "params": {"zero_latency": True, "seed": 3, "accuracy": 0.5,
                                            "error_rate": 0.2}, "max_retries": 0}]
    fleet_dir.manifest["output"].update(formats=["junit", "markdown"], generate_reports=False)
    prepared = prepare_file(fleet_dir.write(), host=host, cache_dir=tmp_path / "cache")
    with RunStore(tmp_path / "state") as store:
        outcome = await execute_run(prepared, host=host, store=store,
                                    export_worker_min_tests=0)  # a separate process
    assert not any("export worker" in w for w in outcome.warnings)
    root = ET.parse(outcome.output_dir / "junit.xml").getroot()
    fleet = outcome.summary.fleet
    assert fleet.failed
    assert fleet.error
    assert (_int(root, "tests"), _int(root, "failures"), _int(root, "errors")) == (
        fleet.total, fleet.failed, fleet.error + fleet.timeout)
    summary = (outcome.output_dir / "summary.md").read_text(encoding="utf-8")
    assert f"of {fleet.total} tests passed" in summary

"""The executive HTML report: its content, its escaping, its bounded memory, and the
page itself opened in headless Chromium (Debian's, driven by Playwright).

Checklist numbers refer to reference/origin-test-bench.md §8. The browser tests skip
locally without Chromium or Playwright, saying why; ``FLEETBENCH_REQUIRE_BROWSER=1``
(set by ``.ci/run``) turns that skip into a failure, so CI cannot pass by skipping.
Screenshots go to the test's tmp folder and, when ``FLEETBENCH_TEST_ARTIFACTS`` names a
folder, there too.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fleetbench._aggregator import Aggregator
from fleetbench._builtins._report import Samples
from fleetbench._builtins.report_html import REPORT_FILE, HtmlExporter
from fleetbench._export import exporter_names
from fleetbench._plugins import PluginHost
from fleetbench.records import Status, Summary, TestResult, Verdict

from .conftest import FleetDir
from .test_exporters import _many, benchmark, interleave, make_result, opening, run_info

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("overview", "providers", "repositories", "categories", "slowest", "failing",
            "metadata")
SCRIPT = "<script>window.__pwned = 1</script>"
HOSTILE_TEXT = f'</pre>{SCRIPT}<img src=x onerror="window.__pwned = 2">"quoted" \'single\' &amp;'


# ------------------------------------------------------------------------------ helpers


class Page(HTMLParser):
    """A parsed report: the text of each ``<section id=…>``, every tag and attribute."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: dict[str, list[str]] = {}
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []
        self._section: str | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend(attrs)
        if tag == "section":
            self._section = dict(attrs)["id"] or ""
            self.sections[self._section] = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._section = None

    def handle_data(self, data: str) -> None:
        if self._section is not None:
            self.sections[self._section].append(data)

    def text(self, section: str) -> str:
        return " ".join(" ".join(self.sections[section]).split())

    def attribute_values(self, name: str) -> list[str]:
        return [value or "" for key, value in self.attributes if key == name]


def report(tmp_path: Path, results: list[TestResult], *, summary: Summary | None = None,
           **run_changes: Any) -> str:
    """Export ``results`` through the html exporter as the core does; the page."""
    run = replace(run_info(tmp_path, planned=len(results)), **run_changes)
    exporter = HtmlExporter()
    exporter.open(opening(run))
    for result in results:
        exporter.write(result)
    (path,) = exporter.finalize(summary or summarize(results), run)
    assert path == tmp_path / REPORT_FILE
    return path.read_text(encoding="utf-8")


def summarize(results: list[TestResult]) -> Summary:
    aggregator = Aggregator()
    aggregator.add_many(results)
    return aggregator.finalize()


def checklist_15_results() -> list[TestResult]:
    """test-bench's executive-report scenario (checklist 15)."""
    return interleave(benchmark("api-gateway", "openai", 10, 0),
                      benchmark("user-service", "anthropic", 7, 3),
                      benchmark("payment-service", "openai", 3, 7))


# ---------------------------------------------------------------------- registration


def test_html_is_a_builtin_exporter_added_when_reports_are_on(host: PluginHost) -> None:
    spec = host.exporters["html"]
    assert spec.files == (REPORT_FILE,)
    assert exporter_names(["json"], True, host.exporters) == ["json", "html"]
    assert exporter_names(["json"], False, host.exporters) == ["json"]
    assert exporter_names(["html", "csv"], True, host.exporters) == ["html", "csv"]


# --------------------------------------------------------------------------- content


def test_checklist_15_16_executive_report_content(tmp_path: Path) -> None:
    html = report(tmp_path, checklist_15_results(), fleet_id="production-fleet")
    assert html.startswith("<!DOCTYPE html>")
    assert "<title>Fleet Benchmark Executive Report - production-fleet</title>" in html
    page = Page(html)
    assert set(SECTIONS) <= set(page.sections)
    overview = page.text("overview")
    for label in ("Total Repositories", "Total Tests", "Success Rate", "Total Cost",
                  "Latency p50 / p95", "TTFT p50 / p95"):
        assert label in overview
    assert "Total Repositories 3 2 providers · 1 scenario Total Tests 30 10.0 per repository" \
        in overview
    assert "Success Rate 66.7% 20 passed · 0 failed · 10 errors" in overview
    assert "Total Cost $0.1200" in overview  # checklist 9: 20 answered x $0.006
    providers = page.text("providers")
    assert "Provider Breakdown" in providers
    assert "openai:gpt-4" in providers
    assert "anthropic:gpt-4" in providers
    repositories = page.text("repositories")
    assert "Repository Comparison" in repositories
    assert "Best repository api-gateway 100.0% success" in repositories
    assert "Worst repository payment-service 30.0% success" in repositories
    assert "Repositories Below 90% Success Rate (2 found)" in repositories
    below = repositories.split("(2 found)")[1]
    assert below.index("payment-service") < below.index("user-service")  # worst first


def test_no_below_threshold_heading_when_every_repository_reaches_it(tmp_path: Path) -> None:
    page = Page(report(tmp_path, interleave(benchmark("a", "openai", 9, 1),
                                            benchmark("b", "openai", 10, 0))))
    repositories = page.text("repositories")
    assert "Repositories Below" not in repositories  # 9/10 is not below 90 %
    assert "Every repository reaches a 90% success rate." in repositories


def test_figures_come_from_the_summary(tmp_path: Path) -> None:
    results = interleave(benchmark("r1", "openai", 4, 1), benchmark("r2", "anthropic", 2, 3))
    summary = summarize(results)
    page = Page(report(tmp_path, results, summary=summary))
    fleet = summary.fleet
    providers = page.text("providers")
    assert f"{summary.by_provider['openai:gpt-4'].latency_ms.p95:,.0f} ms" in providers
    assert f"${fleet.cost_usd:.4f}" in page.text("overview")
    metadata = page.text("metadata")
    assert "linear interpolation between closest ranks" in metadata
    assert "Pricing table version 2025-03" in metadata
    assert "builtin.simulated 0.1.0" in metadata
    assert "Tests with a result / planned 10 / 10" in metadata


def test_unpriced_providers_are_named_not_shown_as_free(tmp_path: Path) -> None:
    results = interleave([make_result(i, cost=None) for i in range(3)],
                         [make_result(i, provider="cheap") for i in range(3, 6)])
    page = Page(report(tmp_path, results))
    overview, providers = page.text("overview"), page.text("providers")
    assert "Total Cost $0.0180" in overview  # the priced half only
    assert "3 tests without a price" in overview
    assert "Not plotted (some tests have no price): openai:gpt-4." in providers
    assert "Cheapest per test cheap:gpt-4 $0.006000" in providers
    assert "openai:gpt-4 3 100.0% 0 0 0" in providers  # its row: cost is a dash, not $0
    assert "— * —" in providers


def test_slowest_and_failing_tests_are_picked_deterministically(tmp_path: Path) -> None:
    long_prompt = "p" * 1000
    results = [replace(make_result(i, total_ms=1000.0 + (i % 5) * 100,
                                   status=Status.FAILED if i % 3 == 0 else Status.PASSED),
                       error=None)
               for i in range(40)]
    results[7] = replace(results[7], item=replace(results[7].item, prompt=long_prompt))
    samples = Samples(slowest=4, failing=3)
    for result in results:
        samples.add(result)
    slowest = samples.slowest()
    # latency = total - 1.5: the slowest have i % 5 == 4; equal latencies keep plan order
    assert [s.index for s in slowest] == [4, 9, 14, 19]
    assert [s.index for s in samples.failing] == [0, 3, 6]
    assert slowest[1].prompt.omitted == 0
    html = report(tmp_path, results)
    page = Page(html)
    assert html.split('id="slowest-table"')[1].split("</table>")[0].count("<details>") == 10
    assert "Every failed, errored or timed-out test (14), in plan order." in page.text("failing")
    assert "400 more characters" not in page.text("slowest")  # t-7 is not among the slowest
    samples = Samples(slowest=1)
    samples.add(results[7])
    assert (samples.slowest()[0].prompt.text, samples.slowest()[0].prompt.omitted) == \
        ("p" * 600, 400)


def test_failing_tests_show_why_and_their_evaluators(tmp_path: Path) -> None:
    failed = replace(make_result(0, status=Status.FAILED, text="the answer"),
                     verdicts=(Verdict("contains", False, 0.0, "missing 'def'"),
                               Verdict("regex", True, 1.0, "matched")))
    errored = make_result(1, status=Status.ERROR)
    failing = Page(report(tmp_path, [failed, errored])).text("failing")
    assert "contains : missing 'def'" in failing
    assert "provider said no" in failing
    assert "the answer" in failing
    assert "prompt 0" in failing
    assert "regex passed · score 1.00 · matched" in failing


def test_answers_are_left_out_when_responses_are_not_saved(tmp_path: Path) -> None:
    results = [make_result(0, text="secret answer text"),
               make_result(1, status=Status.FAILED, text="another answer")]
    html = report(tmp_path, results, save_responses=False)
    assert "secret answer text" not in html
    assert "another answer" not in html
    assert "Answers are not saved" in Page(html).text("slowest")


def test_an_empty_run_still_renders_every_section(tmp_path: Path) -> None:
    page = Page(report(tmp_path, []))
    assert set(SECTIONS) <= set(page.sections)
    assert "No test got an answer." in page.text("slowest")
    assert "No test failed." in page.text("failing")
    assert "Repositories Below" not in page.text("repositories")


def test_exporting_one_run_twice_gives_identical_pages(tmp_path: Path) -> None:
    results = checklist_15_results()
    first = report(tmp_path, results)
    assert report(tmp_path, results) == first  # no clock, no random order


def test_write_before_open_is_an_error_and_abort_leaves_nothing(tmp_path: Path) -> None:
    exporter = HtmlExporter()
    with pytest.raises(RuntimeError, match="open"):
        exporter.write(make_result(0))
    exporter.open(opening(run_info(tmp_path)))
    exporter.write(make_result(0))
    exporter.abort()
    assert os.listdir(tmp_path) == []
    with pytest.raises(RuntimeError, match="open"):
        exporter.finalize(summarize([]), run_info(tmp_path))


# -------------------------------------------------------------------------- escaping


def hostile_results() -> list[TestResult]:
    """Ids, prompt, answer, error, evaluator detail and category that are markup."""
    result = make_result(0, repo="repo<b onmouseover=\"window.__pwned = 3\">'&",
                         model='m<i>"x"</i>', category="<svg onload=alert(1)>",
                         status=Status.FAILED, text=HOSTILE_TEXT)
    item = replace(result.item, test_id='"><script>window.__pwned = 1;', prompt=HOSTILE_TEXT,
                   expected=HOSTILE_TEXT)
    item = replace(item, key=f"{item.repo_id}/{item.scenario}/{item.provider_key}/{item.test_id}")
    return [replace(result, item=item, error=HOSTILE_TEXT,
                    verdicts=(Verdict("contains", False, 0.0, HOSTILE_TEXT),))]


def test_everything_user_provided_is_escaped(tmp_path: Path) -> None:
    results = hostile_results()
    html = report(tmp_path, results, fleet_id='fleet"<script>', warnings=(HOSTILE_TEXT,),
                  repositories={results[0].item.repo_id: {"team": HOSTILE_TEXT}})
    page = Page(html)
    assert page.tags.count("script") == 1  # the report's own, nothing injected
    assert not {"b", "i", "img"} & set(page.tags)
    assert not {"onmouseover", "onerror", "onload"} & {name for name, _ in page.attributes}
    assert "window.__pwned" not in html.split("<script>")[-1]  # not in our script either
    failing = page.text("failing")
    assert '"><script>window.__pwned = 1;' in failing  # shown as text, verbatim
    assert " ".join(HOSTILE_TEXT.split()) in failing
    assert "<svg onload=alert(1)>" in page.text("categories")
    assert results[0].item.key in page.attribute_values("data-sort")  # attributes hold
    assert 'm<i>"x"</i>' in page.text("repositories")


# ---------------------------------------------------------------------------- memory


def test_memory_stays_flat_over_20000_results(tmp_path: Path) -> None:
    count = 20_000
    exporter = HtmlExporter()
    exporter.open(opening(run_info(tmp_path, planned=count)))
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for result in _many(count):
            failed = result.item.index % 3 == 0  # failing tests are sampled too
            exporter.write(replace(result, status=Status.FAILED) if failed else result)
        held = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    # One float per result alone would be 160 kB; the samples are 30 clipped tests
    # and a few dozen histogram counters per provider.
    assert held < 160 * 1024, held
    (path,) = exporter.finalize(summarize(list(_many(100))), run_info(tmp_path, planned=count))
    assert path.stat().st_size > 0


# --------------------------------------------------------------------------- browser


def _unavailable(reason: str) -> None:
    if os.environ.get("FLEETBENCH_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (FLEETBENCH_REQUIRE_BROWSER=1 forbids skipping)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def shots() -> ModuleType:
    """``scripts/screenshot_report.py`` as a module: Chromium and the quick-start run."""
    if importlib.util.find_spec("playwright") is None:
        _unavailable("Playwright is not installed (pip install -r requirements-dev.txt)")
    spec = importlib.util.spec_from_file_location("screenshot_report",
                                                  ROOT / "scripts" / "screenshot_report.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not Path(module.CHROMIUM).exists():
        _unavailable(f"{module.CHROMIUM} not found (apt-get install -y chromium)")
    return module


@pytest.fixture(scope="module")
def browser(shots: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with shots.chromium(tmp_path_factory.mktemp("chromium")) as chromium:
        yield chromium


class Opened:
    """A report open in a page that records console errors, page errors and every
    request that is not the report file itself (there must be none)."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.url = path.as_uri()
        self.page.route("**/*", self._only_the_file)
        self.page.goto(self.url)

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def _only_the_file(self, route: Any) -> None:
        if route.request.url.split("#")[0] == self.url:
            route.continue_()
        else:
            self.requests.append(route.request.url)
            route.abort()

    def column(self, table: str, index: int) -> list[str]:
        return [text.strip() for text in self.page.locator(
            f"#{table} tbody tr > :nth-child({index})").all_inner_texts()]

    def sort_keys(self, table: str, index: int) -> list[float]:
        cells = self.page.locator(f"#{table} tbody tr > :nth-child({index})")
        return [float(cells.nth(i).get_attribute("data-sort") or "nan")
                for i in range(cells.count())]


def _save_screenshot(page: Any, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    artifacts = os.environ.get("FLEETBENCH_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / path.name)


def test_quickstart_report_in_chromium(shots: ModuleType, browser: Any,
                                       tmp_path: Path) -> None:
    path = shots.run_quickstart(tmp_path)
    opened = Opened(browser, path)
    page = opened.page
    assert page.title() == "Fleet Benchmark Executive Report - quickstart"
    for section in SECTIONS:
        assert page.locator(f"section#{section}").is_visible(), section
    for heading in ("Fleet Benchmark Report", "Provider Breakdown", "Repository Comparison",
                    "Categories", "Slowest Tests", "Failing Tests", "Run Metadata"):
        assert page.get_by_role("heading", name=heading).count() == 1, heading
    assert page.locator("figure.chart svg").count() == 3
    manifest = json.loads((path.parent / "manifest.json").read_text(encoding="utf-8"))
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    assert hashlib.sha256(canonical).hexdigest() in page.locator("#metadata").inner_text()
    assert page.locator("#heatmap-table tbody tr").count() == 3  # three repositories

    # Sorting: the provider table starts in name order; success rate sorts both ways.
    names = opened.column("providers-table", 1)
    assert names == sorted(names)
    assert len(names) == 3
    header = page.locator("#providers-table thead th", has_text="Success rate")
    header.get_by_role("button").click()
    assert header.get_attribute("aria-sort") == "ascending"
    ascending = opened.sort_keys("providers-table", 3)
    assert ascending == sorted(ascending)
    header.get_by_role("button").click()
    assert header.get_attribute("aria-sort") == "descending"
    assert opened.sort_keys("providers-table", 3) == sorted(ascending, reverse=True)
    assert opened.column("providers-table", 1) != names  # the rows really moved

    # A test opens to show its prompt; printing hides the navigation.
    first = page.locator("#slowest-table details").first
    first.locator("summary").click()
    assert first.get_by_role("heading", name="Prompt").is_visible()
    _save_screenshot(page, tmp_path / "executive-report-quickstart.png")
    page.evaluate("window.dispatchEvent(new Event('beforeprint'))")
    assert page.locator("details:not([open])").count() == 0  # printing shows every test
    page.emulate_media(media="print")
    assert page.locator("nav.toc").is_hidden()
    assert page.pdf()[:5] == b"%PDF-"

    assert opened.errors == []
    assert opened.requests == []


def test_the_content_security_policy_blocks_a_script_that_slipped_in(
        browser: Any, tmp_path: Path) -> None:
    """Defence in depth: were an escape ever missed, the page's policy admits only the
    report's own script (by hash) and no network, so an injected one does not run."""
    html = report(tmp_path, checklist_15_results())
    injected = html.replace("</main>", f"{SCRIPT}<img src='https://example.invalid/x.png'>"
                                       "</main>")
    path = tmp_path / "tampered.html"
    path.write_text(injected, encoding="utf-8")
    opened = Opened(browser, path)
    assert opened.page.evaluate("typeof window.__pwned") == "undefined"
    assert any("Content Security Policy" in error for error in opened.errors), opened.errors
    assert opened.requests == []  # the image was refused before any request
    header = opened.page.locator("#providers-table thead th", has_text="Tests")
    header.get_by_role("button").click()  # the report's own script still runs
    assert header.get_attribute("aria-sort") == "ascending"


def test_hostile_test_case_renders_as_text_in_chromium(shots: ModuleType, browser: Any,
                                                       fleet_dir: FleetDir,
                                                       tmp_path: Path) -> None:
    """A dataset test case whose id, prompt and answer hold ``<script>`` and quotes:
    the page shows them as text and runs none of them."""
    hostile_id = '"><script>window.__pwned = 1;'
    fleet_dir.datasets["repos/api/datasets/coding-tasks.json"]["test_cases"][0].update(
        id=hostile_id, prompt=HOSTILE_TEXT, expected=HOSTILE_TEXT, variables={})
    fleet_dir.manifest["providers"] = [{"id": "simulated:fast",
                                        "params": {"zero_latency": True}}]
    path = shots.run_fleet(fleet_dir.write(), tmp_path)
    assert path.is_file()
    opened = Opened(browser, path)
    page = opened.page
    assert page.evaluate("typeof window.__pwned") == "undefined"
    summary = page.locator("#slowest-table summary", has_text=hostile_id)
    summary.first.click()
    detail = summary.first.locator("xpath=..")
    assert HOSTILE_TEXT in detail.locator("pre").first.inner_text()  # the prompt, verbatim
    assert HOSTILE_TEXT in detail.locator("pre").nth(2).inner_text()  # the answer starts so
    _save_screenshot(page, tmp_path / "executive-report-hostile.png")
    assert opened.errors == []
    assert opened.requests == []

"""The ``junit`` exporter: ``junit.xml``, one ``<testcase>`` per test, so CI systems
(Jenkins, GitLab, GitHub test reporters …) show each failing test with its reason.

Layout: ``<testsuites>`` (named after the fleet) holds one ``<testsuite>`` per
repository × ``provider:model`` (sorted), each with the run id, repository and provider
as ``<properties>``. A ``<testcase>`` is named by the test key, its ``classname`` is
``{repo_id}.{scenario}.{provider:model}`` and its ``time`` the test's total time in
seconds (retries included). Statuses map to JUnit's outcomes: ``failed`` → ``<failure>``
(every failed evaluator's detail, then the answer's start when responses are saved),
``error`` and ``timeout`` → ``<error>`` (the provider error), ``skipped`` and
``cancelled`` → ``<skipped>``. Counts: ``failures`` = failed, ``errors`` = error +
timeout, ``skipped`` = skipped + cancelled, as in the run summary.

Results arrive in plan order, which interleaves suites, so each rendered testcase (one
line: newlines inside text are written as ``&#10;``) is spooled on disk under its
suite and ``finalize`` streams the spools into the document; memory holds only the
per-suite counters. Text is escaped for XML and characters XML 1.0 cannot carry
(control characters, lone surrogates) become U+FFFD. Nothing depends on the export's
clock, so exporting a stored run twice gives the same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO
from xml.sax.saxutils import escape, quoteattr

from fleetbench._builtins._export._files import Spool, atomic_write, prepare_output_dir
from fleetbench._compare import describe_failure
from fleetbench.plugin import RunInfo
from fleetbench.records import Status, Summary, TestResult

__all__ = ["JUNIT_FILE", "JunitExporter"]

JUNIT_FILE = "junit.xml"
ANSWER_CHARS = 2000
"""How much of a failed test's answer its ``<failure>`` shows."""
_SPOOL_CHARS = 4 * 1024 * 1024
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ONE_LINE = {"\n": "&#10;", "\r": "&#13;"}


def _clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _attr(text: str) -> str:
    """A quoted attribute value (quoteattr writes newlines and tabs as references)."""
    return quoteattr(_clean(text))


def _text(text: str) -> str:
    """Element text on one line: newlines as character references."""
    return escape(_clean(text), _ONE_LINE)


def _seconds(ms: float) -> str:
    return f"{max(ms, 0.0) / 1000.0:.3f}"


def _junit_time(stamp: str | None) -> str:
    """JUnit's ``timestamp``: ISO 8601 to the second, without a zone (the run's are UTC)."""
    return (stamp or "")[:19]


@dataclass(slots=True)
class _Suite:
    """Counters of one repository × provider suite; ``bucket`` numbers its spool."""

    bucket: int
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    time_ms: float = 0.0

    def add(self, status: Status, total_ms: float) -> None:
        self.tests += 1
        self.time_ms += max(total_ms, 0.0)
        if status is Status.FAILED:
            self.failures += 1
        elif status in (Status.ERROR, Status.TIMEOUT):
            self.errors += 1
        elif status in (Status.SKIPPED, Status.CANCELLED):
            self.skipped += 1

    def counts(self) -> str:
        return (f'tests="{self.tests}" failures="{self.failures}" errors="{self.errors}" '
                f'skipped="{self.skipped}" time="{_seconds(self.time_ms)}"')


@dataclass(slots=True)
class _Open:
    run: RunInfo
    spool: Spool
    suites: dict[tuple[str, str], _Suite] = field(default_factory=dict)


def _outcome(result: TestResult, save_responses: bool) -> str:
    """The ``<failure>``, ``<error>`` or ``<skipped>`` element of a test ("" if passed)."""
    status = result.status
    if status is Status.PASSED:
        return ""
    message = _attr(describe_failure(result))
    if status in (Status.SKIPPED, Status.CANCELLED):
        return f"<skipped message={message}/>"
    if status is Status.FAILED:
        lines = [f"{'passed' if v.passed else 'FAILED'} {v.evaluator} (score {v.score:g})"
                 + (" could not judge" if v.error else "") + (f": {v.detail}" if v.detail else "")
                 for v in result.verdicts]
        if save_responses and result.response is not None:
            answer = result.response.text
            cut = answer[:ANSWER_CHARS] + ("…" if len(answer) > ANSWER_CHARS else "")
            lines.append(f"answer: {cut}")
        return f'<failure message={message} type="failed">{_text(chr(10).join(lines))}</failure>'
    kind = "timeout" if status is Status.TIMEOUT else (result.error_kind or "error")
    body = f"{result.error or status.value} (retries: {result.retries})"
    return f"<error message={message} type={_attr(kind)}>{_text(body)}</error>"


def _testcase(result: TestResult, save_responses: bool) -> str:
    item = result.item
    head = (f"<testcase name={_attr(item.key)} "
            f"classname={_attr(f'{item.repo_id}.{item.scenario}.{item.provider_key}')} "
            f'time="{_seconds(result.total_ms)}"')
    outcome = _outcome(result, save_responses)
    return f"{head}>{outcome}</testcase>" if outcome else f"{head}/>"


class JunitExporter:
    """Writes ``junit.xml``; memory holds per-suite counters and a bounded spool buffer."""

    def __init__(self) -> None:
        self._state: _Open | None = None

    def open(self, run: RunInfo) -> None:
        """Prepare the output folder (removing leftovers of a crashed export)."""
        self.abort()
        prepare_output_dir(run.output_dir, (JUNIT_FILE,))
        self._state = _Open(run, Spool(run.output_dir / JUNIT_FILE, _SPOOL_CHARS))

    def write(self, result: TestResult) -> None:
        """Render one testcase and spool it under its suite."""
        state = self._require_open()
        item = result.item
        suite = state.suites.get((item.repo_id, item.provider_key))
        if suite is None:
            suite = state.suites[(item.repo_id, item.provider_key)] = _Suite(len(state.suites))
        suite.add(result.status, result.total_ms)
        state.spool.append(suite.bucket, _testcase(result, state.run.save_responses))

    def finalize(self, summary: Summary, run: RunInfo) -> Sequence[Path]:
        """Write the document atomically, then delete the spool."""
        state = self._require_open()
        path = run.output_dir / JUNIT_FILE
        try:
            with atomic_write(path) as out:
                _write_document(out, state, run)
        finally:
            self.abort()
        return [path]

    def abort(self) -> None:
        """Drop the spool without writing the document."""
        if self._state is not None:
            self._state.spool.remove()
            self._state = None

    def _require_open(self) -> _Open:
        if self._state is None:
            raise RuntimeError("JunitExporter: open() must be called before write/finalize")
        return self._state


def _write_document(out: TextIO, state: _Open, run: RunInfo) -> None:
    suites = sorted(state.suites.items())
    total = _Suite(-1)
    for _, suite in suites:
        total.tests += suite.tests
        total.failures += suite.failures
        total.errors += suite.errors
        total.skipped += suite.skipped
        total.time_ms += suite.time_ms
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
    out.write(f"<testsuites name={_attr(run.fleet_id)} {total.counts()}>\n")
    timestamp = _attr(_junit_time(run.started_at or run.created_at))
    for number, ((repo_id, provider), suite) in enumerate(suites):
        out.write(f"  <testsuite name={_attr(f'{repo_id} / {provider}')} {suite.counts()} "
                  f"timestamp={timestamp} hostname=\"fleetbench\" id=\"{number}\" "
                  f"package={_attr(repo_id)}>\n    <properties>\n")
        for name, value in (("run_id", run.run_id), ("fleet_id", run.fleet_id),
                            ("repository", repo_id), ("provider", provider)):
            out.write(f"      <property name=\"fleetbench.{name}\" value={_attr(value)}/>\n")
        out.write("    </properties>\n")
        state.spool.write_joined(suite.bucket, out, "\n    ", before="    ", after="\n")
        out.write("  </testsuite>\n")
    out.write("</testsuites>\n")

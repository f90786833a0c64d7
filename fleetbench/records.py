"""The small set of frozen records every part of fleetbench speaks.

Data flows one way through them::

    Dataset/TestCase ──planner──► WorkItem ──executor──► ProviderRequest
        ──provider──► ProviderResponse (or StreamChunks) ──evaluators──► Verdict
        ──executor──► TestResult ──bus──► store, aggregator, exporters, streams

YAML stays in the manifest loader, vendor JSON inside provider plugins and protobuf
inside the server/client layer; everything in between uses these records. They are
immutable, so any observer may keep a reference without copying.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

__all__ = [
    "Dataset",
    "Distribution",
    "EvaluatorRef",
    "GenerationSettings",
    "GroupStats",
    "ProviderRequest",
    "ProviderResponse",
    "RunStatus",
    "Status",
    "StreamChunk",
    "Summary",
    "TestCase",
    "TestResult",
    "Usage",
    "Verdict",
    "WorkItem",
]

@dataclass(frozen=True, slots=True)
class GenerationSettings:
    """Sampling settings sent to a model. ``None`` means "not set at this layer".

    Layers merge dataset defaults < test config < scenario settings < provider params;
    ``params`` holds vendor-specific extras (e.g. ``top_k``, ``seed``) passed through
    to the provider plugin untouched.
    """

    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] | None = None
    system: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def overlaid_with(self, upper: GenerationSettings) -> GenerationSettings:
        """Return these settings with every field ``upper`` sets taking precedence."""
        return GenerationSettings(
            temperature=_first(upper.temperature, self.temperature),
            max_tokens=_first(upper.max_tokens, self.max_tokens),
            top_p=_first(upper.top_p, self.top_p),
            stop=_first(upper.stop, self.stop),
            system=_first(upper.system, self.system),
            params={**self.params, **upper.params},
        )

    def as_dict(self) -> dict[str, Any]:
        """The settings that are set, as plain JSON-able data (for artifacts and hashing)."""
        out: dict[str, Any] = {}
        for name in ("temperature", "max_tokens", "top_p", "system"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.stop is not None:
            out["stop"] = list(self.stop)
        if self.params:
            out["params"] = dict(self.params)
        return out


_T = TypeVar("_T")


def _first(upper: _T | None, lower: _T | None) -> _T | None:
    return upper if upper is not None else lower


@dataclass(frozen=True, slots=True)
class EvaluatorRef:
    """A configured evaluator: its plugin name and its options."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TestCase:
    """One test case as read from a dataset file; ``prompt`` is still a template."""

    __test__ = False  # not a pytest test class

    id: str
    prompt: str
    category: str | None = None
    variables: Mapping[str, str] = field(default_factory=dict)
    expected: str | None = None
    references: tuple[str, ...] = ()
    config: GenerationSettings = field(default_factory=GenerationSettings)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    evaluators: tuple[EvaluatorRef, ...] = ()


@dataclass(frozen=True, slots=True)
class Dataset:
    """A loaded, validated dataset. ``content_sha256`` feeds the run id."""

    name: str
    test_cases: tuple[TestCase, ...]
    source: str
    content_sha256: str
    version: str | None = None
    description: str | None = None
    defaults: GenerationSettings = field(default_factory=GenerationSettings)
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One planned test: a rendered prompt for one provider/model, one epoch.

    ``key`` is ``{repo_id}/{scenario}/{provider}:{model}/{test_id}`` plus ``#r{epoch}``
    for epochs after the first; ``index`` is its position in plan order.
    """

    key: str
    index: int
    repo_id: str
    scenario: str
    provider: str
    model: str
    test_id: str
    epoch: int
    prompt: str
    settings: GenerationSettings
    stream: bool
    category: str | None = None
    expected: str | None = None
    references: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    evaluators: tuple[EvaluatorRef, ...] = ()

    @property
    def provider_key(self) -> str:
        """``provider:model``, the key providers are reported under."""
        return f"{self.provider}:{self.model}"


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    """What the executor asks a provider for. Vendor plugins translate it to HTTP.

    ``expected`` is only for simulated and test providers that must answer
    predictably; a vendor plugin never sends it anywhere.
    """

    model: str
    prompt: str
    settings: GenerationSettings
    stream: bool
    test_key: str
    attempt: int = 1
    expected: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage. ``estimated`` is true when the vendor reported none."""

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class ProviderResponse:
    """A complete answer. ``finish_reason`` is normalised to
    ``stop | length | content_filter | tool_calls | error | other``."""

    text: str
    usage: Usage | None = None
    finish_reason: str | None = None
    model: str | None = None
    response_id: str | None = None


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One piece of a streamed answer. The executor stamps arrival times itself:
    the first chunk with non-empty ``text`` is the first token."""

    text: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None
    model: str | None = None
    response_id: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """An evaluator's judgement. ``error`` marks an evaluator that could not judge,
    which never counts as a pass.

    ``cost_usd``, ``input_tokens`` and ``output_tokens`` are what the evaluator itself
    spent calling a model (an LLM judge), kept apart from the tested model's cost and
    usage on the :class:`TestResult`; ``None`` for evaluators that call nothing.
    """

    evaluator: str
    passed: bool
    score: float
    detail: str = ""
    error: bool = False
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


class Status(enum.StrEnum):
    """The outcome of one test (DESIGN §5)."""

    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    TIMEOUT = "timeout"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def legacy(self) -> str:
        """The test-bench status this maps to: ``success | failure | timeout | skipped``."""
        return _LEGACY[self]


_LEGACY = {
    Status.PASSED: "success",
    Status.FAILED: "failure",
    Status.ERROR: "failure",
    Status.TIMEOUT: "timeout",
    Status.SKIPPED: "skipped",
    Status.CANCELLED: "skipped",
}


@dataclass(frozen=True, slots=True)
class TestResult:
    """The record of one finished test: quality, speed and money.

    Timings are milliseconds from a monotonic clock, measured by the executor
    (DESIGN §5); ``None`` where they do not apply (e.g. ``ttft_ms`` without streaming).
    """

    __test__ = False  # not a pytest test class

    item: WorkItem
    status: Status
    started_at: str
    finished_at: str
    queue_ms: float = 0.0
    latency_ms: float | None = None
    ttft_ms: float | None = None
    itl_ms: float | None = None
    total_ms: float = 0.0
    retries: int = 0
    usage: Usage | None = None
    cost_usd: float | None = None
    response: ProviderResponse | None = None
    verdicts: tuple[Verdict, ...] = ()
    error: str | None = None
    error_kind: str | None = None
    cached: bool = False

    @property
    def key(self) -> str:
        return self.item.key

    @property
    def evaluation_cost_usd(self) -> float:
        """What the evaluators spent judging the answer (LLM judges), apart from
        ``cost_usd``; 0 when none has a cost."""
        return sum((v.cost_usd for v in self.verdicts if v.cost_usd is not None), 0.0) \
            if self.verdicts else 0.0

    def with_status(self, status: Status) -> TestResult:
        """A copy with another status (used when a run is cancelled or skipped)."""
        return replace(self, status=status)


class RunStatus(enum.StrEnum):
    """The life of a run (DESIGN §6): PENDING → RUNNING → COMPLETED | FAILED | CANCELLED;
    INTERRUPTED when the process stopped mid-run (it resumes on the next start)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def is_final(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class Distribution:
    """Summary statistics of one metric in milliseconds over the tests that have it.

    Final summaries use exact percentiles (linear interpolation between closest ranks,
    numpy's default); live snapshots use DDSketch estimates (1 % relative accuracy).
    """

    count: int = 0
    mean: float | None = None
    min: float | None = None
    max: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None


@dataclass(frozen=True, slots=True)
class GroupStats:
    """Aggregates of one group of tests (the fleet, a provider, a repository …).

    ``success_rate = passed / total``; ``error_rate = (error + timeout) / total``.
    Latency, TTFT and ITL cover tests that got a response; ``duration`` covers every
    test (``total_ms``: retries and backoff included), as test-bench's duration did.
    ``cost_usd`` sums the priced tests; ``unpriced_tests`` counts those without a price.
    ``evaluation_cost_usd`` sums what evaluators spent judging the answers (LLM judges'
    calls), apart from ``cost_usd``, the tested models' cost.
    ``output_tokens_per_s`` is total output tokens over total latency seconds.
    """

    total: int = 0
    passed: int = 0
    failed: int = 0
    error: int = 0
    timeout: int = 0
    skipped: int = 0
    cancelled: int = 0
    success_rate: float = 0.0
    error_rate: float = 0.0
    latency_ms: Distribution = field(default_factory=Distribution)
    ttft_ms: Distribution = field(default_factory=Distribution)
    itl_ms: Distribution = field(default_factory=Distribution)
    duration_ms: Distribution = field(default_factory=Distribution)
    queue_ms: Distribution = field(default_factory=Distribution)
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_tests: int = 0
    output_tokens_per_s: float | None = None
    evaluation_cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class Summary:
    """Every aggregate of a run: the fleet and each breakdown, keyed by group name.

    ``by_repository_provider`` is keyed ``(repo_id, "provider:model")``. ``exact`` is
    true for final summaries (exact percentiles) and false for live snapshots.
    """

    fleet: GroupStats
    by_provider: Mapping[str, GroupStats]
    by_repository: Mapping[str, GroupStats]
    by_category: Mapping[str, GroupStats]
    by_scenario: Mapping[str, GroupStats]
    by_repository_provider: Mapping[tuple[str, str], GroupStats]
    exact: bool
    percentile_method: str = "linear"

"""The local asyncio executor: runs work items against providers under every limit.

It owns concurrency (per provider, per repository×scenario, global), rate limits (rpm
and tpm token buckets), pacing (``request_delay_ms``), per-test timeouts, retries with
exponential backoff and full jitter (honouring the vendor's retry-after hint), and the
measurement of every timing (DESIGN §5). Providers only translate and classify.

Each provider gets ``concurrency`` workers pulling its tests in plan order, so a slow
provider never holds back a fast one, and repositories stay interleaved fairly because
the plan already interleaves them.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fleetbench._clock import utc_now
from fleetbench._http import WireTimes, track_wire_times
from fleetbench._limits import TokenBucket
from fleetbench._manifest import FleetManifest
from fleetbench._plugins import PluginHost
from fleetbench._pricing import Price, cost_usd
from fleetbench.errors import PluginError, ProviderError, ProviderTimeoutError
from fleetbench.plugin import Evaluator, EvaluatorContext, ModelEvaluator, Provider
from fleetbench.records import (
    EvaluatorRef,
    GenerationSettings,
    ProviderRequest,
    ProviderResponse,
    Status,
    TestResult,
    Usage,
    Verdict,
    WorkItem,
)

__all__ = ["EvaluatorCache", "ExecutionPlan", "LocalExecutor", "ProviderLane",
           "bind_evaluator", "estimated_usage", "generate_with_retries"]

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0


@dataclass(slots=True)
class ProviderLane:
    """One ``provider:model`` with its limits, as the executor drives it."""

    key: str
    provider: Provider
    concurrency: int
    max_retries: int
    timeout_s: float
    price: Price | None
    rpm: TokenBucket | None = None
    tpm: TokenBucket | None = None


@dataclass(slots=True)
class ExecutionPlan:
    """Everything the executor needs for one run (or the rest of a resumed one).

    :param on_result: called once per finished test, in completion order; awaited so
        it can apply backpressure.
    :param evaluator: builds (and caches) the evaluator of an ``EvaluatorRef``.
    :param cached: looks a test up in the result cache (``global_settings.cache``); a
        hit is judged again by the test's own evaluators and marked ``cached``.
    :param manifest: the resolved manifest the lanes were built from, for executors that
        run tests in other processes and rebuild providers and evaluators there
        (:mod:`fleetbench._shard`); the local executor does not use it.
    """

    items: Sequence[WorkItem]
    lanes: Mapping[str, ProviderLane]
    scenario_limits: Mapping[tuple[str, str], tuple[int, int]]
    evaluator: Callable[[EvaluatorRef], Evaluator]
    on_result: Callable[[TestResult], Awaitable[None]]
    test_timeout_s: float | None = None
    max_in_flight: int | None = None
    continue_on_failure: bool = True
    cached: Callable[[WorkItem], TestResult | None] | None = None
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    manifest: FleetManifest | None = None


class EvaluatorCache:
    """Builds evaluators from ``host``'s plugins, one per distinct name and options:
    the usual :attr:`ExecutionPlan.evaluator`.

    Called once per test: the plan shares ref objects between tests, so a ref seen
    before is found by identity (the entry keeps it alive, so its id is not reused).
    Evaluators that call a model (LLM judges) are bound to ``context``, the run's
    providers; without one they cannot call and say so in their verdicts.
    """

    def __init__(self, host: PluginHost, context: EvaluatorContext | None = None) -> None:
        self.host = host
        self.context = context
        self._by_options: dict[tuple[str, str], Evaluator] = {}
        self._by_ref: dict[int, tuple[EvaluatorRef, Evaluator]] = {}

    def __call__(self, ref: EvaluatorRef) -> Evaluator:
        """The evaluator of ``ref``. :raises PluginError: its plugin is not installed."""
        seen = self._by_ref.get(id(ref))
        if seen is not None and seen[0] is ref:
            return seen[1]
        options = json.dumps(dict(ref.options), sort_keys=True, default=str) \
            if ref.options else "{}"
        key = (ref.name, options)
        evaluator = self._by_options.get(key)
        if evaluator is None:
            spec = self.host.evaluators.get(ref.name)
            if spec is None:
                raise PluginError(f"evaluator {ref.name!r} is not installed")
            evaluator = spec.factory(ref.options)
            if self.context is not None:
                evaluator = bind_evaluator(evaluator, self.context)
            self._by_options[key] = evaluator
        self._by_ref[id(ref)] = (ref, evaluator)
        return evaluator


def bind_evaluator(evaluator: Evaluator, context: EvaluatorContext) -> Evaluator:
    """``evaluator`` bound to ``context`` if it calls a model, else itself.

    :raises ValueError: it cannot work with this run's providers (see
        :meth:`~fleetbench.plugin.ModelEvaluator.bind`).
    """
    return evaluator.bind(context) if isinstance(evaluator, ModelEvaluator) else evaluator


class StopRun(Exception):
    """Raised inside workers to end the run early (continue_on_failure: false)."""


class LocalExecutor:
    """Runs an :class:`ExecutionPlan` on the current event loop.

    :returns: from :meth:`run`, the first error that stopped the run (when
        ``continue_on_failure`` is false), else ``None``.
    """

    def __init__(self, plan: ExecutionPlan) -> None:
        self.plan = plan
        self._queues: dict[str, deque[WorkItem]] = {key: deque() for key in plan.lanes}
        for item in plan.items:
            self._queues[item.provider_key].append(item)
        self._scenario_slots = {key: asyncio.Semaphore(limit)
                                for key, (limit, _) in plan.scenario_limits.items()}
        self._global = asyncio.Semaphore(plan.max_in_flight) if plan.max_in_flight else None
        self.stopped_by: str | None = None

    async def run(self) -> str | None:
        """Run every item; stop early on cancel or (``continue_on_failure: false``) on
        the first error. Tests in flight when the run stops leave no result, so a
        resumed run executes them again."""
        workers = [
            asyncio.create_task(self._worker(lane), name=f"{key}#{n}")
            for key, lane in self.plan.lanes.items()
            for n in range(min(lane.concurrency, len(self._queues[key])))
        ]
        cancelled = asyncio.create_task(self.plan.cancel.wait())
        try:
            pending: set[asyncio.Future[Any]] = set(workers)
            while pending and not cancelled.done():
                done, pending = await asyncio.wait(
                    {*pending, cancelled}, return_when=asyncio.FIRST_COMPLETED)
                pending.discard(cancelled)
                finished = [t for t in done if t is not cancelled]
                if any(isinstance(t.exception(), StopRun) for t in finished):
                    break
                for task in finished:
                    task.result()  # a bug in a worker surfaces here
        finally:
            for task in [*workers, cancelled]:
                task.cancel()
            await asyncio.gather(*workers, cancelled, return_exceptions=True)
        return self.stopped_by

    async def _worker(self, lane: ProviderLane) -> None:
        queue = self._queues[lane.key]
        stop_on_error = not self.plan.continue_on_failure
        while queue and self.stopped_by is None:
            result = await self._run_one(lane, queue.popleft())
            await self.plan.on_result(result)
            if stop_on_error and result.status in (Status.ERROR, Status.TIMEOUT):
                self.stopped_by = f"{result.key}: {result.error}"
                raise StopRun(self.stopped_by)
            # Let every other worker take its turn: a test that never waited (a cache
            # hit, an instant provider) would otherwise let this worker run its lane far
            # ahead of the others, and results would finish far from plan order.
            await asyncio.sleep(0)

    async def _run_one(self, lane: ProviderLane, item: WorkItem) -> TestResult:
        cached = self.plan.cached(item) if self.plan.cached else None
        if cached is not None and cached.response is not None:
            return await self._reuse(item, cached)
        picked = time.perf_counter()
        started_at = utc_now()
        scenario = (item.repo_id, item.scenario)
        _, delay_ms = self.plan.scenario_limits[scenario]
        async with self._scenario_slots[scenario]:
            if self._global is not None:
                async with self._global:
                    return await self._attempts(lane, item, picked, started_at, delay_ms)
            return await self._attempts(lane, item, picked, started_at, delay_ms)

    async def _attempts(self, lane: ProviderLane, item: WorkItem, picked: float,
                        started_at: str, delay_ms: int) -> TestResult:
        call = _Call(lane, item, picked, started_at)
        if self.plan.test_timeout_s is None:  # no deadline: spare the timer per test
            await call.pace(delay_ms)
            return await self._with_retries(call)
        try:
            async with asyncio.timeout(self.plan.test_timeout_s):
                await call.pace(delay_ms)
                return await self._with_retries(call)
        except TimeoutError:
            return call.finish(Status.TIMEOUT, error=f"test timed out after "
                               f"{self.plan.test_timeout_s:g} s", error_kind="test_timeout")

    async def _with_retries(self, call: _Call) -> TestResult:
        lane = call.lane
        rng: random.Random | None = None  # seeded by the test's key, made on a first retry
        while True:
            call.attempt += 1
            try:
                response = await call.send()
            except ProviderError as exc:
                if not exc.retryable or call.attempt > lane.max_retries:
                    status = Status.TIMEOUT if isinstance(exc, ProviderTimeoutError) \
                        else Status.ERROR
                    return call.finish(status, error=exc.message, error_kind=exc.kind)
                rng = rng or random.Random(call.item.key)
                await asyncio.sleep(_backoff_s(call.attempt, exc.retry_after_s, rng))
                continue
            call.answered = time.perf_counter()  # judging (an LLM judge) is not timed
            verdicts = await self._evaluate(call.item, response) if call.item.evaluators else ()
            passed = all(v.passed and not v.error for v in verdicts)
            return call.finish(Status.PASSED if passed else Status.FAILED, response=response,
                               verdicts=verdicts)

    async def _reuse(self, item: WorkItem, cached: TestResult) -> TestResult:
        """A cached answer, judged again by this test's evaluators."""
        assert cached.response is not None
        verdicts = await self._evaluate(item, cached.response)
        passed = all(v.passed and not v.error for v in verdicts)
        now = utc_now()
        return replace(cached, item=item, status=Status.PASSED if passed else Status.FAILED,
                       verdicts=verdicts, cached=True, started_at=now, finished_at=now,
                       queue_ms=0.0)

    async def _evaluate(self, item: WorkItem, response: ProviderResponse) -> tuple[Verdict, ...]:
        verdicts = []
        for ref in item.evaluators:
            try:
                verdict = await self.plan.evaluator(ref).evaluate(item, response)
            except Exception as exc:  # an evaluator bug is reported, never a pass
                verdict = Verdict(ref.name, False, 0.0, f"{type(exc).__name__}: {exc}",
                                  error=True)
            verdicts.append(verdict)
        return tuple(verdicts)


async def generate_with_retries(lane: ProviderLane, request: ProviderRequest) -> ProviderResponse:
    """Send one non-streaming request outside the plan (an LLM judge's call) the way a
    test's request is sent: under the lane's rate limits and timeout, with errors
    classified by its provider and retryable ones retried with backoff up to the lane's
    ``max_retries``.

    :raises ProviderError: the error of the last attempt.
    """
    rng: random.Random | None = None  # seeded by the request's key, made on a first retry
    attempt = 1
    while True:
        await _take_rate(lane, _token_estimate(request.prompt, request.settings))
        try:
            return await _guarded(lane, lane.provider.generate(replace(request, attempt=attempt)))
        except ProviderError as exc:
            if not exc.retryable or attempt > lane.max_retries:
                raise
            rng = rng or random.Random(request.test_key)
            await asyncio.sleep(_backoff_s(attempt, exc.retry_after_s, rng))
            attempt += 1


async def _take_rate(lane: ProviderLane, tokens: int) -> None:
    """Wait for the lane's rpm and tpm buckets (``tokens``: the request's estimate)."""
    if lane.rpm is not None:
        await lane.rpm.take(1)
    if lane.tpm is not None:
        await lane.tpm.take(tokens)


async def _guarded(lane: ProviderLane, call: Awaitable[ProviderResponse]) -> ProviderResponse:
    """Await one provider call under the lane's timeout; every failure leaves as a
    :class:`ProviderError`, classified by the provider where it can."""
    try:
        async with asyncio.timeout(lane.timeout_s):
            return await call
    except TimeoutError:
        raise ProviderTimeoutError(f"no answer within {lane.timeout_s:g} s") from None
    except ProviderError:
        raise
    except Exception as exc:
        mapped = lane.provider.classify_error(exc)
        if mapped is None:
            raise ProviderError(f"{type(exc).__name__}: {exc}") from exc
        raise mapped from exc


def _backoff_s(attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
    """Full-jitter exponential backoff; a vendor's retry-after hint is a floor."""
    jitter = rng.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1)))
    if retry_after_s is not None:
        return retry_after_s + min(jitter, 0.1 * retry_after_s)
    return jitter


class _Call:
    """The timings and attempts of one test, measured with a monotonic clock."""

    def __init__(self, lane: ProviderLane, item: WorkItem, picked: float,
                 started_at: str) -> None:
        self.lane, self.item = lane, item
        self.picked, self.started_at = picked, started_at
        self.first_sent: float | None = None
        self.sent = self.last_byte = picked
        self.first_token: float | None = None
        self.last_token: float | None = None
        self.answered: float | None = None
        self.attempt = 0
        self._wire = WireTimes()

    async def pace(self, delay_ms: int) -> None:
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)

    async def send(self) -> ProviderResponse:
        lane, item = self.lane, self.item
        if lane.rpm is not None or lane.tpm is not None:
            await _take_rate(lane, _token_estimate(item.prompt, item.settings))
        request = ProviderRequest(model=item.model, prompt=item.prompt, settings=item.settings,
                                  stream=item.stream, test_key=item.key, attempt=self.attempt,
                                  expected=item.expected)
        wire = self._wire = track_wire_times()
        self.sent = time.perf_counter()
        if self.first_sent is None:
            self.first_sent = self.sent
        self.first_token = self.last_token = None
        try:
            return await _guarded(lane, self._stream(request) if item.stream
                                  else lane.provider.generate(request))
        finally:
            self.last_byte = wire.body_end or time.perf_counter()
            if wire.sent is not None:  # the request left later than we called the plugin:
                if self.first_sent == self.sent:  # that delay is ours, not the vendor's
                    self.first_sent = wire.sent
                self.sent = wire.sent

    async def _stream(self, request: ProviderRequest) -> ProviderResponse:
        parts: list[str] = []
        usage = finish = model = response_id = None
        async for chunk in self.lane.provider.stream(request):
            # When the bytes of this chunk reached the process, not when the loop got round
            # to resuming this task (the client's own delay, under load).
            now = self._wire.last_arrival() or time.perf_counter()
            if chunk.text:
                if self.first_token is None:
                    self.first_token = now
                self.last_token = now
                parts.append(chunk.text)
            usage = chunk.usage or usage
            finish = chunk.finish_reason or finish
            model = chunk.model or model
            response_id = chunk.response_id or response_id
        return ProviderResponse("".join(parts), usage, finish, model, response_id)

    def finish(self, status: Status, *, response: ProviderResponse | None = None,
               verdicts: tuple[Verdict, ...] = (), error: str | None = None,
               error_kind: str | None = None) -> TestResult:
        done = self.answered if self.answered is not None else time.perf_counter()
        first_sent = self.first_sent if self.first_sent is not None else done
        usage = None if response is None else response.usage or estimated_usage(
            self.item.prompt, self.item.settings, response.text)
        if response is not None and response.usage is not usage:
            response = ProviderResponse(response.text, usage, response.finish_reason,
                                        response.model, response.response_id)
        return TestResult(
            item=self.item,
            status=status,
            started_at=self.started_at,
            finished_at=utc_now(),
            queue_ms=(first_sent - self.picked) * 1000,
            latency_ms=(self.last_byte - self.sent) * 1000 if response is not None else None,
            ttft_ms=self._ttft_ms(response),
            itl_ms=self._itl_ms(usage),
            total_ms=(done - first_sent) * 1000,
            retries=max(self.attempt - 1, 0),
            usage=usage,
            cost_usd=cost_usd(usage, self.lane.price) if usage and self.lane.price else None,
            response=response,
            verdicts=verdicts,
            error=error,
            error_kind=error_kind,
        )

    def _ttft_ms(self, response: ProviderResponse | None) -> float | None:
        if response is None or self.first_token is None:
            return None
        return (self.first_token - self.sent) * 1000

    def _itl_ms(self, usage: Usage | None) -> float | None:
        if usage is None or self.first_token is None or self.last_token is None:
            return None
        if usage.output_tokens < 2:
            return None
        return (self.last_token - self.first_token) * 1000 / (usage.output_tokens - 1)


def estimated_usage(prompt: str, settings: GenerationSettings, answer: str) -> Usage:
    """Usage for a provider that reported none: ≈4 characters a token, flagged."""
    prompt_chars = len(prompt) + len(settings.system or "")
    return Usage(math.ceil(prompt_chars / 4), math.ceil(len(answer) / 4), estimated=True)


def _token_estimate(prompt: str, settings: GenerationSettings) -> int:
    """Tokens a request may use, for the tpm bucket: prompt estimate + output budget."""
    return math.ceil((len(prompt) + len(settings.system or "")) / 4) \
        + (settings.max_tokens or 256)

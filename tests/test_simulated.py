"""The built-in ``simulated`` provider: seeded, configurable, fault-injecting, fast."""

from __future__ import annotations

import asyncio
import math
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from fleetbench._builtins import simulated
from fleetbench._builtins.simulated import (
    SimulatedProvider,
    fleetbench_register_providers,
    parse_params,
    stream_schedule,
)
from fleetbench._plugins import load_plugins
from fleetbench.errors import (
    AuthenticationError,
    BadRequestError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
    TransientProviderError,
)
from fleetbench.plugin import PLUGIN_API_VERSION, ProviderConfig
from fleetbench.records import GenerationSettings, ProviderRequest, StreamChunk

ZERO: dict[str, Any] = {"zero_latency": True}
Make = Callable[..., SimulatedProvider]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:  # the simulator never uses it
        yield client


@pytest.fixture
def make(http: httpx.AsyncClient) -> Make:
    def build(model: str = "fast-small", timeout_s: float = 60.0,
              **params: Any) -> SimulatedProvider:
        config = ProviderConfig(provider="simulated", model=model, timeout_s=timeout_s,
                                params=params)
        return SimulatedProvider(config, http)

    return build


def req(key: str = "repo/scn/simulated:fast-small/t1", *, attempt: int = 1,
        expected: str | None = None, prompt: str = "What is 6 x 7?", stream: bool = False,
        **settings: Any) -> ProviderRequest:
    return ProviderRequest(model="fast-small", prompt=prompt,
                           settings=GenerationSettings(**settings), stream=stream,
                           test_key=key, attempt=attempt, expected=expected)


def keys(n: int) -> list[str]:
    return [f"repo/scn/simulated:fast-small/t{i}" for i in range(n)]


async def collect(provider: SimulatedProvider, request: ProviderRequest) -> list[StreamChunk]:
    return [chunk async for chunk in provider.stream(request)]


async def consume_into(stream: AsyncIterator[StreamChunk], sink: list[StreamChunk]) -> None:
    async for chunk in stream:
        sink.append(chunk)


async def outcome(provider: SimulatedProvider, request: ProviderRequest) -> ProviderError | None:
    try:
        await provider.generate(request)
    except ProviderError as exc:
        return exc
    return None


def describe(error: ProviderError | None) -> tuple[object, ...] | None:
    if error is None:
        return None
    return type(error), error.message, error.status_code, error.retry_after_s


# ------------------------------------------------------------------------ registration


def test_hook_declares_one_keyless_provider() -> None:
    [spec] = fleetbench_register_providers()
    assert spec.name == "simulated"
    assert spec.factory is SimulatedProvider
    assert spec.default_api_key_env is None
    assert spec.description
    assert simulated.FLEETBENCH_PLUGIN_API_VERSION == PLUGIN_API_VERSION
    assert spec.validate is not None
    spec.validate(ProviderConfig("simulated", "m", params={"error_rate": 0.1}))
    with pytest.raises(ValueError, match="'error_rate'"):
        spec.validate(ProviderConfig("simulated", "m", params={"error_rate": 2}))


def test_loaded_as_a_builtin_plugin() -> None:
    host = load_plugins(env={}, entry_points=[])
    assert host.providers["simulated"].factory is SimulatedProvider


def test_connection_key_is_per_model_and_unbounded(make: Make) -> None:
    small, large = make("fast-small"), make("slow-large")
    assert small.connection_key() != large.connection_key()
    assert small.connection_key() == make("fast-small").connection_key()
    assert small.max_connections() is None
    assert small.supports_streaming


# ------------------------------------------------------------------------- determinism


async def test_same_request_gives_identical_answers(make: Make) -> None:
    params = {**ZERO, "error_rate": 0.2, "accuracy": 0.5}
    first, second = make(**params), make(**params)
    for key in keys(40):
        request = req(key, expected="forty two")
        assert first.draw(request) == second.draw(request)
        assert describe(await outcome(first, request)) == describe(await outcome(second, request))
        if first.draw(request).fault is None:
            assert await first.generate(request) == await second.generate(request)
            assert await collect(first, request) == await collect(second, request)


def test_draws_do_not_depend_on_the_process(make: Make) -> None:
    """The seed is a stable hash: another interpreter with another hash seed agrees."""
    code = (
        "from fleetbench._builtins.simulated import SimulatedProvider\n"
        "from fleetbench.plugin import ProviderConfig\n"
        "from fleetbench.records import GenerationSettings, ProviderRequest\n"
        "p = SimulatedProvider(ProviderConfig('simulated', 'fast-small'), None)\n"
        "r = ProviderRequest('fast-small', 'hi', GenerationSettings(), False, 'k/t9', 2, 'x')\n"
        "c = p.draw(r)\n"
        "print(repr((c.ttft_ms, c.itl_ms, c.latency_ms, c.text, c.response_id)))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, check=True,
                         capture_output=True, text=True).stdout.strip()
    here = make().draw(ProviderRequest("fast-small", "hi", GenerationSettings(), False,
                                       "k/t9", 2, "x"))
    assert out == repr((here.ttft_ms, here.itl_ms, here.latency_ms, here.text,
                        here.response_id))


def test_test_key_seed_and_model_all_change_the_draws(make: Make) -> None:
    base = make()
    calls = [base.draw(req(key)) for key in keys(50)]
    assert len({c.ttft_ms for c in calls}) == 50
    assert len({c.text for c in calls}) == 50
    request = req()
    assert make(seed=1).draw(request).ttft_ms != base.draw(request).ttft_ms
    assert make("slow-large").draw(request).ttft_ms != base.draw(request).ttft_ms


def test_zero_latency_changes_no_draw(make: Make) -> None:
    request = req(expected="42")
    assert make().draw(request) == make(**ZERO).draw(request)


# ----------------------------------------------------------------------- distributions


def test_lognormal_median_is_respected(make: Make) -> None:
    provider = make(**ZERO, ttft_ms={"dist": "lognormal", "median": 400, "sigma": 0.5})
    drawn = [provider.draw(req(key)).ttft_ms for key in keys(500)]
    assert statistics.median(drawn) == pytest.approx(400, rel=0.10)
    assert statistics.pstdev([math.log(x) for x in drawn]) == pytest.approx(0.5, rel=0.15)


def test_uniform_stays_in_bounds(make: Make) -> None:
    provider = make(**ZERO, itl_ms={"dist": "uniform", "min": 10, "max": 50})
    drawn = [provider.draw(req(key)).itl_ms for key in keys(500)]
    assert all(10 <= x <= 50 for x in drawn)
    assert statistics.fmean(drawn) == pytest.approx(30, rel=0.10)


def test_normal_is_clamped_at_zero(make: Make) -> None:
    provider = make(**ZERO, ttft_ms={"dist": "normal", "mean": 0, "stddev": 10},
                    output_tokens={"dist": "normal", "mean": 0, "stddev": 3})
    calls = [provider.draw(req(key)) for key in keys(500)]
    assert all(c.ttft_ms >= 0 for c in calls)
    assert 0.4 < sum(c.ttft_ms == 0 for c in calls) / 500 < 0.6
    assert all(c.output_tokens >= 1 for c in calls)  # an answer has at least one token


def test_constants_and_derived_latency(make: Make) -> None:
    fixed = make(**ZERO, latency_ms=123, ttft_ms={"dist": "constant", "value": 7})
    assert {fixed.draw(req(key)).latency_ms for key in keys(20)} == {123.0}
    assert {fixed.draw(req(key)).ttft_ms for key in keys(20)} == {7.0}
    derived = make(**ZERO)  # no latency_ms: a non-streamed answer takes as long as a stream
    for key in keys(20):
        call = derived.draw(req(key))
        assert call.latency_ms == pytest.approx(
            call.ttft_ms + call.itl_ms * (call.output_tokens - 1))


def test_output_tokens_follow_their_distribution(make: Make) -> None:
    provider = make(**ZERO, output_tokens={"dist": "lognormal", "median": 100, "sigma": 0.3})
    calls = [provider.draw(req(key)) for key in keys(500)]
    assert statistics.median(c.output_tokens for c in calls) == pytest.approx(100, rel=0.10)
    assert all(len(c.text.split()) == c.output_tokens for c in calls)


async def test_sleeps_are_lower_bounded_by_the_configured_times(make: Make) -> None:
    """Real time, small values: measured time can only exceed what is configured."""
    slack_ms = 0.01  # asyncio may wake a timer up to the clock resolution (1 ns) early
    provider = make(latency_ms=30, ttft_ms=20, itl_ms=5, output_tokens=5, tokens_per_chunk=2)
    start = time.perf_counter()
    await provider.generate(req())
    assert (time.perf_counter() - start) * 1000 >= 30 - slack_ms

    start = time.perf_counter()
    arrivals = [((time.perf_counter() - start) * 1000, chunk)
                async for chunk in provider.stream(req(stream=True))]
    text_arrivals = [ms for ms, chunk in arrivals if chunk.text]
    assert len(text_arrivals) == 3  # 1 + ceil(4 / 2)
    assert text_arrivals[0] >= 20 - slack_ms
    assert text_arrivals[1] >= 20 + 2 * 5 - slack_ms
    assert text_arrivals[-1] >= 20 + 4 * 5 - slack_ms


# ------------------------------------------------------------------------------ faults


async def test_rate_limit_rate_and_retry_after(make: Make) -> None:
    provider = make(**ZERO, rate_limit_rate=0.3, retry_after_s=2.5)
    errors = [await outcome(provider, req(key)) for key in keys(1000)]
    limited = [e for e in errors if e is not None]
    assert 0.25 <= len(limited) / 1000 <= 0.35
    for error in limited:
        assert isinstance(error, RateLimitedError)
        assert error.retryable
        assert error.retry_after_s == 2.5
        assert error.status_code == 429


async def test_fault_rates_combine(make: Make) -> None:
    provider = make(**ZERO, error_rate=0.1, rate_limit_rate=0.2, timeout_rate=0.1,
                    bad_request_rate=0.05)
    faults = [provider.draw(req(key)).fault for key in keys(2000)]
    for kind, rate in [("error", 0.1), ("rate_limit", 0.2), ("timeout", 0.1),
                       ("bad_request", 0.05), (None, 0.55)]:
        assert faults.count(kind) / 2000 == pytest.approx(rate, abs=0.03)


@pytest.mark.parametrize(
    ("params", "error_type", "status", "retryable"),
    [
        ({"error_rate": 1.0}, TransientProviderError, 500, True),
        ({"rate_limit_rate": 1.0}, RateLimitedError, 429, True),
        ({"timeout_rate": 1.0}, ProviderTimeoutError, None, True),
        ({"bad_request_rate": 1.0}, BadRequestError, 400, False),
        ({"auth_error": True}, AuthenticationError, 401, False),
    ],
)
async def test_each_fault_is_classified(make: Make, params: dict[str, Any],
                                        error_type: type[ProviderError], status: int | None,
                                        retryable: bool) -> None:
    provider = make(**ZERO, **params)
    error = await outcome(provider, req())
    assert type(error) is error_type
    assert error.status_code == status
    assert error.retryable is retryable
    assert error.message.startswith("simulated")
    chunks: list[StreamChunk] = []
    with pytest.raises(error_type):
        await consume_into(provider.stream(req(stream=True)), chunks)
    assert chunks == []  # the fault comes before any chunk


async def test_retry_after_can_be_absent(make: Make) -> None:
    error = await outcome(make(**ZERO, rate_limit_rate=1.0, retry_after_s=None), req())
    assert isinstance(error, RateLimitedError)
    assert error.retry_after_s is None


async def test_faults_are_per_attempt_and_answers_are_not(make: Make) -> None:
    provider = make(**ZERO, error_rate=0.5, accuracy=0.5)
    recovered = 0
    for key in keys(100):
        calls = [provider.draw(req(key, attempt=n, expected="ok then")) for n in (1, 2, 3)]
        assert [provider.draw(req(key, attempt=n, expected="ok then")) for n in (1, 2, 3)] \
            == calls
        assert len({(c.text, c.output_tokens, c.correct) for c in calls}) == 1
        assert len({c.response_id for c in calls}) == 3
        recovered += calls[0].fault is not None and calls[1].fault is None
    assert recovered > 10  # a retry often succeeds where the first attempt failed


async def test_a_hang_is_cancelled_promptly(make: Make) -> None:
    provider = make(timeout_s=60, timeout_rate=1.0)  # hangs 61 s unless cut
    for attempt in (provider.generate(req()), collect(provider, req(stream=True))):
        start = time.perf_counter()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await attempt
        assert time.perf_counter() - start < 1.0


async def test_a_hang_ends_in_a_provider_timeout(make: Make) -> None:
    provider = make(timeout_rate=1.0, timeout_hang_s=0.02)
    start = time.perf_counter()
    with pytest.raises(ProviderTimeoutError, match=re.escape("0.02s")):
        await provider.generate(req())
    assert time.perf_counter() - start >= 0.02 - 1e-5
    assert parse_params({}, timeout_s=5).timeout_hang_s > 5


# --------------------------------------------------------------------------- streaming


async def test_stream_groups_tokens_and_ends_with_usage(make: Make) -> None:
    provider = make(**ZERO, output_tokens=10, tokens_per_chunk=3)
    chunks = await collect(provider, req(stream=True))
    text_chunks = [c for c in chunks if c.text]
    assert len(text_chunks) == 1 + math.ceil(9 / 3)
    assert [len(c.text.split()) for c in text_chunks] == [1, 3, 3, 3]
    final = chunks[-1]
    assert final.text == ""
    assert final.usage is not None
    assert final.usage.output_tokens == 10
    assert final.finish_reason == "stop"
    whole = await provider.generate(req())
    assert "".join(c.text for c in chunks) == whole.text
    assert len(whole.text.split()) == 10


@pytest.mark.parametrize("tokens_per_chunk", [1, 3, 7, 50])
def test_schedule_lets_the_executor_recover_ttft_and_itl(make: Make,
                                                          tokens_per_chunk: int) -> None:
    provider = make(output_tokens=23)
    call = provider.draw(req())
    schedule = stream_schedule(call, tokens_per_chunk)
    texts = [(due, chunk) for due, chunk in schedule if chunk.text]
    assert texts[0][0] == call.ttft_ms
    assert [due for due, _ in schedule] == sorted(due for due, _ in schedule)
    itl = (texts[-1][0] - texts[0][0]) / (call.output_tokens - 1)  # DESIGN §5
    assert itl == pytest.approx(call.itl_ms)
    assert schedule[-1][1].usage == call.usage


async def test_zero_latency_never_sleeps(make: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    provider = make(**ZERO, timeout_rate=0.3)

    async def no_sleep(delay: float) -> None:
        raise AssertionError(f"slept {delay}")

    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    for key in keys(30):
        if provider.draw(req(key)).fault is None:
            await provider.generate(req(key))
            await collect(provider, req(key, stream=True))
        else:
            with pytest.raises(ProviderTimeoutError):
                await provider.generate(req(key))


async def test_stream_keeps_the_expected_text_verbatim(make: Make) -> None:
    expected = "def fizzbuzz(n):\n    return  n\t"
    provider = make(**ZERO, output_tokens=12)
    chunks = await collect(provider, req(expected=expected, stream=True))
    assert expected in "".join(c.text for c in chunks)


# ------------------------------------------------------------------ max_tokens and stop


async def test_max_tokens_caps_the_answer(make: Make) -> None:
    provider = make(**ZERO, output_tokens=50)
    request = req(max_tokens=10)
    response = await provider.generate(request)
    assert response.finish_reason == "length"
    assert response.usage is not None
    assert response.usage.output_tokens == 10
    assert len(response.text.split()) == 10
    chunks = await collect(provider, request)
    assert chunks[-1].finish_reason == "length"
    assert "".join(c.text for c in chunks) == response.text
    call = provider.draw(request)
    assert call.latency_ms == pytest.approx(call.ttft_ms + 9 * call.itl_ms)


async def test_max_tokens_above_the_answer_is_a_normal_stop(make: Make) -> None:
    response = await make(**ZERO, output_tokens=5).generate(req(max_tokens=10))
    assert response.finish_reason == "stop"
    assert response.usage is not None
    assert response.usage.output_tokens == 5


async def test_max_tokens_below_one_is_a_bad_request(make: Make) -> None:
    with pytest.raises(BadRequestError, match="max_tokens"):
        await make(**ZERO).generate(req(max_tokens=0))


async def test_stop_sequences_cut_the_answer(make: Make) -> None:
    provider = make(**ZERO, output_tokens=10)
    response = await provider.generate(req(expected="alpha omega", stop=("omega",)))
    assert response.text == "alpha "
    assert response.usage is not None
    assert response.usage.output_tokens == 1
    assert response.finish_reason == "stop"
    empty = await provider.generate(req(expected="alpha omega", stop=("alpha",)))
    assert (empty.text, empty.usage and empty.usage.output_tokens) == ("", 0)
    chunks = await collect(provider, req(expected="alpha omega", stop=("alpha",)))
    assert [c.text for c in chunks] == [""]


# ---------------------------------------------------------------------------- answers


EXPECTEDS = ["42", "forty two", "the", "e", "O", "Quick Brown", "def fizzbuzz", "x y z"]


@pytest.mark.parametrize("expected", EXPECTEDS)
async def test_accuracy_one_always_contains_the_expected(make: Make, expected: str) -> None:
    provider = make(**ZERO, accuracy=1.0)
    for key in keys(100):
        call = provider.draw(req(key, expected=expected))
        assert call.correct is True
        assert call.text.startswith(expected)
        assert len(call.text.split()) == call.output_tokens


@pytest.mark.parametrize("expected", EXPECTEDS)
async def test_accuracy_zero_never_contains_it_even_ignoring_case(make: Make,
                                                                 expected: str) -> None:
    provider = make(**ZERO, accuracy=0.0)
    for key in keys(100):
        call = provider.draw(req(key, expected=expected))
        assert call.correct is False
        assert expected.casefold() not in call.text.casefold()
        assert len(call.text.split()) == call.output_tokens


def test_accuracy_half_is_about_half_and_stable_across_attempts(make: Make) -> None:
    provider = make(**ZERO, accuracy=0.5)
    verdicts = []
    for key in keys(600):
        attempts = {"42" in provider.draw(req(key, attempt=n, expected="42")).text
                    for n in (1, 2, 5)}
        assert len(attempts) == 1
        verdicts.append(attempts.pop())
    assert 0.43 <= sum(verdicts) / 600 <= 0.57


def test_unpadded_answers_are_exactly_the_expected(make: Make) -> None:
    provider = make(**ZERO, pad_answers=False, accuracy=0.5)
    calls = [provider.draw(req(key, expected="forty two")) for key in keys(50)]
    right = [c for c in calls if c.correct]
    assert right
    assert all(c.text == "forty two" and c.output_tokens == 2 for c in right)
    wrong = [c for c in calls if not c.correct]
    assert wrong
    assert all(c.output_tokens == 2 and "forty two" not in c.text for c in wrong)


def test_a_long_expected_is_never_cut_to_the_drawn_count(make: Make) -> None:
    expected = "one two three four five six seven eight"
    call = make(**ZERO, output_tokens=3).draw(req(expected=expected))
    assert (call.text, call.output_tokens) == (expected, 8)


def test_without_expected_the_answer_is_filler_of_the_drawn_count(make: Make) -> None:
    provider = make(**ZERO, output_tokens=17)
    for key in keys(20):
        call = provider.draw(req(key))
        assert call.correct is None
        assert len(call.text.split()) == 17 == call.output_tokens
    big = make(**ZERO, output_tokens=5000).draw(req())  # longer than the filler pool
    assert len(big.text.split()) == 5000


async def test_usage_is_real_and_follows_the_token_rules(make: Make) -> None:
    provider = make(**ZERO)
    response = await provider.generate(req(prompt="0123456789", system="abcde"))
    assert response.usage is not None
    assert response.usage.input_tokens == 4  # ceil(15 / 4)
    assert response.usage.output_tokens == len(response.text.split())
    assert response.usage.estimated is False
    assert response.model == "fast-small"
    assert response.response_id


# ------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"latncy_ms": 5}, "did you mean 'latency_ms'"),
        ({"latency_ms": {"dist": "lognorm", "median": 1, "sigma": 1}}, "'latency_ms'"),
        ({"latency_ms": [1, 2]}, "'latency_ms'"),
        ({"latency_ms": math.inf}, "'latency_ms'"),
        ({"ttft_ms": -1}, "'ttft_ms'"),
        ({"ttft_ms": {"dist": "uniform", "min": 5, "max": 1}}, "'ttft_ms'"),
        ({"ttft_ms": {"dist": "uniform", "min": 1, "max": math.nan}}, "'ttft_ms.max'"),
        ({"itl_ms": {"dist": "normal", "mean": 5}}, "missing stddev"),
        ({"itl_ms": {"median": 5, "sigma": 1}}, "'itl_ms'"),
        ({"output_tokens": {"dist": "lognormal", "median": 0, "sigma": 1}},
         "'output_tokens.median'"),
        ({"output_tokens": {"dist": "lognormal", "median": 9, "sigma": 1, "mu": 2}},
         "'output_tokens.mu'"),
        ({"output_tokens": {"dist": "lognormal", "median": 9, "sigma": "wide"}},
         "'output_tokens.sigma'"),
        ({"output_tokens": "many"}, "'output_tokens'"),
        ({"error_rate": 1.5}, "'error_rate'"),
        ({"rate_limit_rate": "0.3"}, "'rate_limit_rate'"),
        ({"timeout_rate": -0.1}, "'timeout_rate'"),
        ({"bad_request_rate": True}, "'bad_request_rate'"),
        ({"error_rate": 0.6, "rate_limit_rate": 0.6}, "add up to 1.2"),
        ({"accuracy": 1.1}, "'accuracy'"),
        ({"seed": 1.5}, "'seed'"),
        ({"seed": True}, "'seed'"),
        ({"zero_latency": "yes"}, "'zero_latency'"),
        ({"tokens_per_chunk": 0}, "'tokens_per_chunk'"),
        ({"retry_after_s": -1}, "'retry_after_s'"),
        ({"timeout_hang_s": "long"}, "'timeout_hang_s'"),
        ({"pad_answers": 1}, "'pad_answers'"),
        ({"auth_error": "no"}, "'auth_error'"),
    ],
)
def test_bad_params_are_named(make: Make, params: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        make(**params)


def test_generation_settings_in_params_are_accepted(make: Make) -> None:
    make(temperature=0, max_tokens=5, top_p=1, top_k=3, stop=["x"], system="s")

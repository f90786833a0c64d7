"""The built-in ``simulated`` provider: an offline, seeded stand-in for an LLM vendor.

It lets a fleet run work with no network and no key (``simulated:<any model>``), and
it gives the executor, aggregator and benchmarks a vendor whose behaviour is known:
latency, TTFT, inter-token latency, output tokens, faults and answers all come from
configurable distributions, drawn from uniform numbers taken from stable hashes
(blake2b, never ``hash()``):

- the hash of ``(seed, model, test_key)`` decides the *answer*: right or wrong, output
  token count, filler words. Every attempt gets the same answer, as from a real model at
  temperature 0;
- the hash of ``(seed, model, test_key, attempt)`` decides that attempt's fault, TTFT,
  ITL and latency, so a retry may succeed where the first attempt failed.

Each draw consumes exactly one uniform number (sampling by inverse transform); hashing
costs far less than seeding a generator per call, which matters at 10,000+ tests/s.

Token rules (the simulator is the vendor, so its usage is real, not estimated):
output tokens are whitespace-separated words, ``len(text.split())``; input tokens are
``ceil(len(system + prompt) / 4)``. User documentation: docs/simulated-provider.md.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import itertools
import math
import random
import re
import statistics
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import httpx

from fleetbench.errors import (
    AuthenticationError,
    BadRequestError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
    TransientProviderError,
)
from fleetbench.plugin import PLUGIN_API_VERSION, Provider, ProviderConfig, ProviderSpec, hookimpl
from fleetbench.records import (
    GenerationSettings,
    ProviderRequest,
    ProviderResponse,
    StreamChunk,
    Usage,
)

__all__ = [
    "SimulatedCall",
    "SimulatedParams",
    "SimulatedProvider",
    "fleetbench_register_providers",
    "parse_distribution",
    "parse_params",
    "stream_schedule",
    "validate_config",
]

FLEETBENCH_PLUGIN_API_VERSION = PLUGIN_API_VERSION  # shipped with the core: always current

NAME = "simulated"
_STANDARD_NORMAL = statistics.NormalDist()
"""Uniform numbers each attempt consumes: fault, TTFT, ITL, latency."""
_TOKEN = re.compile(r"\s*\S+")
"""One output token with the whitespace before it; concatenating them gives the text."""


# ----------------------------------------------------------------------- distributions


class Distribution(Protocol):
    """A distribution of non-negative values, given by its quantile function.

    Sampling by inverse transform makes every draw consume exactly one uniform number,
    which is what lets one generator serve every attempt of a test (see ``draw``).
    """

    def quantile(self, u: float) -> float: ...


@dataclass(frozen=True, slots=True)
class Constant:
    """Always ``value``."""

    value: float

    def quantile(self, u: float) -> float:
        return self.value


@dataclass(frozen=True, slots=True)
class Uniform:
    """Uniform between ``low`` and ``high``."""

    low: float
    high: float

    def quantile(self, u: float) -> float:
        return self.low + (self.high - self.low) * u


@dataclass(frozen=True, slots=True)
class Normal:
    """Normal, clamped at 0 so that a duration or a count is never negative."""

    mean: float
    stddev: float

    def quantile(self, u: float) -> float:
        return max(0.0, self.mean + self.stddev * _z(u))


@dataclass(frozen=True, slots=True)
class LogNormal:
    """Log-normal given by its median and the standard deviation of its logarithm,
    the usual shape of vendor latencies (a long right tail)."""

    median: float
    sigma: float

    def quantile(self, u: float) -> float:
        return self.median * math.exp(self.sigma * _z(u))


def _z(u: float) -> float:
    """The standard normal quantile of ``u`` in [0, 1) (0 itself mapped to 2**-53)."""
    return _STANDARD_NORMAL.inv_cdf(u or 2.0**-53)


_DIST_FIELDS: dict[str, tuple[str, ...]] = {
    "constant": ("value",),
    "lognormal": ("median", "sigma"),
    "normal": ("mean", "stddev"),
    "uniform": ("min", "max"),
}


def parse_distribution(param: str, spec: object) -> Distribution:
    """Build a distribution from a number (a constant) or a mapping with ``dist``.

    :raises ValueError: naming ``param`` (and the bad field) when ``spec`` is invalid.
    """
    if _is_number(spec):
        return Constant(_number(param, spec))
    if not isinstance(spec, Mapping):
        raise ValueError(f"param {param!r}: expected a number or a mapping with 'dist', "
                         f"got {type(spec).__name__}")
    kind = spec.get("dist")
    if kind not in _DIST_FIELDS:
        raise ValueError(f"param {param!r}: unknown dist {kind!r}; expected one of "
                         + ", ".join(sorted(_DIST_FIELDS)))
    fields = _DIST_FIELDS[kind]
    _reject_unknown(spec, {"dist", *fields}, prefix=f"{param}.")
    missing = [f for f in fields if f not in spec]
    if missing:
        raise ValueError(f"param {param!r}: dist {kind} needs {', '.join(fields)}; "
                         f"missing {', '.join(missing)}")
    values = [_number(f"{param}.{f}", spec[f]) for f in fields]
    return _build_distribution(param, kind, values)


def _build_distribution(param: str, kind: str, values: list[float]) -> Distribution:
    if kind == "constant":
        return Constant(values[0])
    if kind == "uniform":
        if values[0] > values[1]:
            raise ValueError(f"param {param!r}: min must not exceed max")
        return Uniform(values[0], values[1])
    if kind == "normal":
        return Normal(values[0], values[1])
    if values[0] <= 0:
        raise ValueError(f"param '{param}.median': must be > 0 (use a constant for 0)")
    return LogNormal(values[0], values[1])


# ------------------------------------------------------------------------- parameters


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(param: str, value: object, *, low: float = 0.0, high: float = math.inf) -> float:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not low <= value <= high or not math.isfinite(value)):
        bounds = f"between {low:g} and {high:g}" if high < math.inf else f">= {low:g}"
        raise ValueError(f"param {param!r}: must be a finite number {bounds}, got {value!r}")
    return float(value)


def _boolean(param: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"param {param!r}: must be true or false, got {value!r}")
    return value


def _integer(param: str, value: object, *, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"param {param!r}: must be an integer >= {low}, got {value!r}")
    return value


def _reject_unknown(given: Mapping[str, Any], known: set[str], prefix: str = "") -> None:
    for key in sorted(set(given) - known, key=str):
        close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
        hint = f"; did you mean {prefix}{close[0]!r}?" if close else ""
        raise ValueError(f"unknown param '{prefix}{key}'{hint}")


_FAULT_RATES = (  # (param, fault kind) in the order their probability intervals are laid out
    ("error_rate", "error"),
    ("rate_limit_rate", "rate_limit"),
    ("timeout_rate", "timeout"),
    ("bad_request_rate", "bad_request"),
)
_DISTRIBUTION_PARAMS = ("latency_ms", "ttft_ms", "itl_ms", "output_tokens")
_SCALAR_PARAMS = ("seed", "zero_latency", "tokens_per_chunk", "auth_error", "retry_after_s",
                  "timeout_hang_s", "accuracy", "pad_answers")
_GENERATION_KEYS = ("temperature", "max_tokens", "top_p", "top_k", "stop", "system")
"""Generation settings a manifest may put in ``params``; they reach the simulator through
``request.settings`` (the settings layers), so they are accepted here and not re-read."""
_KNOWN_PARAMS = {*_DISTRIBUTION_PARAMS, *_SCALAR_PARAMS, *_GENERATION_KEYS,
                 *(name for name, _ in _FAULT_RATES)}


@dataclass(frozen=True, slots=True)
class SimulatedParams:
    """The validated ``params`` of one ``simulated:<model>`` entry (see the docs)."""

    seed: int = 0
    zero_latency: bool = False
    latency_ms: Distribution | None = None
    ttft_ms: Distribution = LogNormal(200.0, 0.3)
    itl_ms: Distribution = LogNormal(5.0, 0.2)
    output_tokens: Distribution = LogNormal(40.0, 0.5)
    tokens_per_chunk: int = 1
    fault_thresholds: tuple[tuple[str, float], ...] = ()
    auth_error: bool = False
    retry_after_s: float | None = 1.0
    timeout_hang_s: float = 61.0
    accuracy: float = 1.0
    pad_answers: bool = True


def parse_params(params: Mapping[str, Any], timeout_s: float = 60.0) -> SimulatedParams:
    """Validate a manifest's ``params`` for the simulator.

    :param timeout_s: the entry's ``timeout_s``; a simulated hang lasts one second
        longer by default, so the executor's own timeout is what ends it.
    :raises ValueError: naming the first bad param.
    """
    _reject_unknown(params, _KNOWN_PARAMS)
    get = params.get
    dists = {name: parse_distribution(name, params[name])
             for name in _DISTRIBUTION_PARAMS if params.get(name) is not None}
    retry_after = get("retry_after_s", 1.0)
    return SimulatedParams(
        seed=_integer("seed", get("seed", 0), low=-(2**63)),
        zero_latency=_boolean("zero_latency", get("zero_latency", False)),
        tokens_per_chunk=_integer("tokens_per_chunk", get("tokens_per_chunk", 1), low=1),
        fault_thresholds=_fault_thresholds(params),
        auth_error=_boolean("auth_error", get("auth_error", False)),
        retry_after_s=None if retry_after is None else _number("retry_after_s", retry_after),
        timeout_hang_s=_number("timeout_hang_s", get("timeout_hang_s", timeout_s + 1.0)),
        accuracy=_number("accuracy", get("accuracy", 1.0), high=1.0),
        pad_answers=_boolean("pad_answers", get("pad_answers", True)),
        **dists,
    )


def _fault_thresholds(params: Mapping[str, Any]) -> tuple[tuple[str, float], ...]:
    """Lay the fault rates end to end on [0, 1): one uniform draw then picks the fault."""
    thresholds: list[tuple[str, float]] = []
    total = 0.0
    for name, kind in _FAULT_RATES:
        rate = _number(name, params.get(name, 0.0), high=1.0)
        total += rate
        if rate > 0:
            thresholds.append((kind, total))
    if total > 1.0 + 1e-9:
        names = ", ".join(name for name, _ in _FAULT_RATES)
        raise ValueError(f"params {names}: the fault rates add up to {total:g}, more than 1")
    return tuple(thresholds)


# ------------------------------------------------------------------------------ text

_VOCABULARY = (
    "the", "model", "answer", "token", "latency", "fleet", "bench", "quick", "brown", "fox",
    "jumps", "over", "lazy", "dog", "signal", "noise", "river", "stone", "cloud", "light",
    "paper", "garden", "window", "orbit", "lemon", "copper", "violet", "marble", "harbor",
    "canyon", "meadow", "pixel", "vector", "kernel", "socket", "buffer", "thread", "cache",
    "ok", "go", "up", "by", "my", "hymn", "lynx", "myth", "gym", "dry", "fly", "sky",
)
_FILLER_WORDS = 4096


class _Filler:
    """A long, seeded word sequence from which answers slice their filler cheaply."""

    def __init__(self, seed: int) -> None:
        digest = hashlib.blake2b(f"filler\x1f{seed}".encode(), digest_size=16).digest()
        words = random.Random(int.from_bytes(digest, "big")).choices(
            _VOCABULARY, k=_FILLER_WORDS)
        self._words = words
        self._text = " ".join(words + words)  # doubled so a slice never wraps
        self._starts = [0, *itertools.accumulate(len(w) + 1 for w in words + words)]

    def take(self, start: int, count: int) -> str:
        """``count`` words beginning at word ``start`` (0 <= start < _FILLER_WORDS)."""
        if count <= 0:
            return ""
        if count <= _FILLER_WORDS:
            return self._text[self._starts[start]:self._starts[start + count] - 1]
        cycle = itertools.islice(itertools.cycle(self._words), start, start + count)
        return " ".join(cycle)


def _avoiding(expected: str, text: str) -> str:
    """``text`` with every word holding some character of ``expected`` replaced, so
    that it cannot contain ``expected``, even ignoring case (filler is lower-case)."""
    char = next(c for c in expected.casefold() if not c.isspace())
    safe = next((w for w in _VOCABULARY if char not in w), "q" if char == "x" else "x")
    return " ".join(w if char not in w else safe for w in text.split(" "))


def _input_tokens(request: ProviderRequest) -> int:
    """``ceil(characters / 4)`` of the system prompt plus the prompt."""
    return -(-(len(request.settings.system or "") + len(request.prompt)) // 4)


def _first_tokens(text: str, count: int) -> str:
    """The text up to the end of its ``count``-th token (``count`` >= 1)."""
    match = next(itertools.islice(_TOKEN.finditer(text), count - 1, None))
    return text[:match.end()]


def _cut_at_stop(text: str, stop: Sequence[str]) -> str | None:
    """The text before the earliest stop sequence, or ``None`` when none occurs."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return text[:min(cuts)] if cuts else None


# ---------------------------------------------------------------------------- a call


@dataclass(frozen=True, slots=True)
class SimulatedCall:
    """Everything the simulator decided for one attempt, before any waiting.

    ``fault`` is ``None`` or one of ``error``, ``rate_limit``, ``timeout``,
    ``bad_request``, ``auth``, ``invalid_max_tokens``. ``correct`` is ``None`` when the
    request has no expected text. Timings are milliseconds; ``latency_ms`` is what a
    non-streamed answer takes.
    """

    fault: str | None
    ttft_ms: float
    itl_ms: float
    latency_ms: float
    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str
    correct: bool | None
    response_id: str

    @property
    def usage(self) -> Usage:
        return Usage(input_tokens=self.input_tokens, output_tokens=self.output_tokens)


@dataclass(frozen=True, slots=True)
class _Answer:
    text: str
    tokens: int
    finish_reason: str
    correct: bool | None


class SimulatedProvider(Provider):
    """Answers from seeded distributions; never touches the network or ``http``.

    Safe for concurrent use: every call builds its own random generator.
    """

    supports_streaming = True

    def __init__(self, config: ProviderConfig, http: httpx.AsyncClient) -> None:
        super().__init__(config, http)
        self.params = parse_params(config.params, config.timeout_s)
        self._filler = _Filler(self.params.seed)
        self._key_prefix = f"{self.params.seed}\x1f{config.model}\x1f"

    def connection_key(self) -> str:
        return f"{NAME}|{self.config.model}"

    def draw(self, request: ProviderRequest) -> SimulatedCall:
        """Decide fault, timings and answer for ``request`` without waiting.

        Pure and deterministic: :meth:`generate` and :meth:`stream` act on exactly
        this, so tests and benchmarks can read the drawn values directly. One
        generator per test: the answer's draws come first (the same for every
        attempt), then attempt ``n`` reads the ``n``-th block of uniform numbers.
        """
        key = (self._key_prefix + request.test_key).encode()
        digest = hashlib.blake2b(key, digest_size=24).digest()
        answer = self._answer(_uniforms(digest), request)
        attempt = hashlib.blake2b(key + b"\x1f%d" % request.attempt, digest_size=32).digest()
        fault_roll, u_ttft, u_itl, u_latency = _uniforms(attempt)
        ttft_ms = self.params.ttft_ms.quantile(u_ttft)
        itl_ms = self.params.itl_ms.quantile(u_itl)
        latency = self.params.latency_ms
        return SimulatedCall(
            fault=self._fault(fault_roll, request.settings),
            ttft_ms=ttft_ms,
            itl_ms=itl_ms,
            latency_ms=latency.quantile(u_latency) if latency is not None
            else ttft_ms + itl_ms * max(answer.tokens - 1, 0),
            text=answer.text,
            input_tokens=_input_tokens(request),
            output_tokens=answer.tokens,
            finish_reason=answer.finish_reason,
            correct=answer.correct,
            response_id=f"sim-{digest.hex()[:16]}-{request.attempt}",
        )

    async def generate(self, request: ProviderRequest) -> ProviderResponse:
        """Wait the drawn latency, then return the whole answer (or raise its fault)."""
        call = self.draw(request)
        if call.fault is not None:
            await self._fail(call)
        if not self.params.zero_latency:
            await asyncio.sleep(call.latency_ms / 1000.0)
        return ProviderResponse(text=call.text, usage=call.usage,
                                finish_reason=call.finish_reason, model=self.config.model,
                                response_id=call.response_id)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamChunk]:
        """Yield the answer token group by token group at the drawn TTFT and ITL.

        The first chunk holds one token and arrives after ``ttft_ms``; each later
        chunk holds up to ``tokens_per_chunk`` tokens and arrives when its last token
        is due (``itl_ms`` per token), so the executor's ITL formula recovers
        ``itl_ms`` exactly. A last, text-less chunk carries usage and finish reason.
        """
        call = self.draw(request)
        if call.fault is not None:
            await self._fail(call)
        schedule = stream_schedule(call, self.params.tokens_per_chunk, self.config.model)
        if self.params.zero_latency:
            for _, chunk in schedule:
                yield chunk
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        for due_ms, chunk in schedule:
            delay = start + due_ms / 1000.0 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            yield chunk

    def _fault(self, roll: float, settings: GenerationSettings) -> str | None:
        if self.params.auth_error:
            return "auth"
        if settings.max_tokens is not None and settings.max_tokens < 1:
            return "invalid_max_tokens"
        for kind, threshold in self.params.fault_thresholds:
            if roll < threshold:
                return kind
        return None

    def _answer(self, draws: Sequence[float], request: ProviderRequest) -> _Answer:
        roll, u_tokens, u_start = draws
        drawn = max(1, int(self.params.output_tokens.quantile(u_tokens) + 0.5))
        start = int(u_start * _FILLER_WORDS)
        expected = request.expected if request.expected and request.expected.strip() else None
        if expected is None:
            text, tokens, correct = self._filler.take(start, drawn), drawn, None
        elif roll < self.params.accuracy:
            (text, tokens), correct = self._right(expected, drawn, start), True
        else:
            (text, tokens), correct = self._wrong(expected, drawn, start), False
        return _finish(text, tokens, request.settings, correct)

    def _right(self, expected: str, drawn: int, start: int) -> tuple[str, int]:
        size = len(expected.split())
        if not self.params.pad_answers or drawn <= size:
            return expected, size
        return f"{expected} {self._filler.take(start, drawn - size)}", drawn

    def _wrong(self, expected: str, drawn: int, start: int) -> tuple[str, int]:
        count = drawn if self.params.pad_answers else len(expected.split())
        text = self._filler.take(start, count)
        if expected.casefold() in text:
            text = _avoiding(expected, text)
        return text, count

    async def _fail(self, call: SimulatedCall) -> NoReturn:
        if call.fault == "timeout" and not self.params.zero_latency:
            await asyncio.sleep(self.params.timeout_hang_s)  # cancellable: a hung vendor
        raise _fault_error(call.fault, self.params)


def _uniforms(digest: bytes) -> list[float]:
    """Uniform numbers in [0, 1), one per 8 bytes of a hash: as good as a seeded
    generator for a handful of draws, at a fraction of the cost of seeding one."""
    return [(int.from_bytes(digest[i:i + 8], "big") >> 11) * _TWO_TO_MINUS_53
            for i in range(0, len(digest), 8)]


_TWO_TO_MINUS_53 = 2.0 ** -53


def _finish(text: str, tokens: int, settings: GenerationSettings,
            correct: bool | None) -> _Answer:
    """Apply ``max_tokens`` (finish ``length``) and then ``stop`` sequences."""
    finish = "stop"
    cap = settings.max_tokens
    if cap is not None and 0 < cap < tokens:
        text, tokens, finish = _first_tokens(text, cap), cap, "length"
    cut = _cut_at_stop(text, settings.stop) if settings.stop else None
    if cut is not None:
        tokens = len(cut.split())
        text, finish = (cut if tokens else ""), "stop"
    return _Answer(text, tokens, finish, correct)


def stream_schedule(call: SimulatedCall, tokens_per_chunk: int,
                    model: str | None = None) -> list[tuple[float, StreamChunk]]:
    """The chunks of a streamed answer, each with when it is due (ms after the send)."""
    pieces = _TOKEN.findall(call.text)
    if pieces and call.text[-1].isspace():
        pieces[-1] += call.text[len(call.text.rstrip()):]  # so the chunks add up to the text
    out = [(call.ttft_ms, StreamChunk(text=pieces[0], model=model,
                                      response_id=call.response_id))] if pieces else []
    for first in range(1, len(pieces), tokens_per_chunk):
        last = min(first + tokens_per_chunk, len(pieces))
        chunk = StreamChunk(text="".join(pieces[first:last]), response_id=call.response_id)
        out.append((call.ttft_ms + call.itl_ms * (last - 1), chunk))
    due = out[-1][0] if out else call.ttft_ms
    out.append((due, StreamChunk(usage=call.usage, finish_reason=call.finish_reason,
                                 model=model, response_id=call.response_id)))
    return out


def _fault_error(fault: str | None, params: SimulatedParams) -> ProviderError:
    """The exception a real vendor's failure of this kind would be classified as."""
    if fault == "rate_limit":
        return RateLimitedError("simulated 429: rate limited", status_code=429,
                                retry_after_s=params.retry_after_s)
    if fault == "timeout":
        return ProviderTimeoutError(
            f"simulated timeout: no answer within {params.timeout_hang_s:g}s")
    if fault == "bad_request":
        return BadRequestError("simulated 400: bad request", status_code=400)
    if fault == "invalid_max_tokens":
        return BadRequestError("simulated 400: max_tokens must be >= 1", status_code=400)
    if fault == "auth":
        return AuthenticationError("simulated 401: invalid API key", status_code=401)
    return TransientProviderError("simulated 500: internal server error", status_code=500)


def validate_config(config: ProviderConfig) -> None:
    """Check a ``simulated:<model>`` entry's params without building a provider.

    :raises ValueError: naming the first bad param.
    """
    parse_params(config.params, config.timeout_s)


@hookimpl
def fleetbench_register_providers() -> list[ProviderSpec]:
    """Declare ``simulated``: seeded, offline, needs no API key."""
    return [ProviderSpec(
        name=NAME,
        factory=SimulatedProvider,
        description="offline simulated LLM: seeded latency, TTFT, ITL, token and fault "
                    "distributions, deterministic answers",
        default_api_key_env=None,
        validate=validate_config,
    )]

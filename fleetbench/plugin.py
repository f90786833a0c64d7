"""Everything a plugin author needs: the hook marker, the API version and the kinds.

A plugin is a module registered under the ``fleetbench`` entry-point group::

    [project.entry-points.fleetbench]
    myvendor = "fleetbench_myvendor"

The module declares the plugin API it was written against and implements hooks::

    from fleetbench.plugin import PLUGIN_API_VERSION, ProviderSpec, hookimpl

    FLEETBENCH_PLUGIN_API_VERSION = 1

    @hookimpl
    def fleetbench_register_providers() -> list[ProviderSpec]:
        return [ProviderSpec(name="myvendor", factory=MyVendorProvider)]

Hooks are for discovery only. Per-request calls go to the objects the specs create
(``Provider.generate``, ``Evaluator.evaluate`` …), so pluggy is never on the hot path.
The executor owns concurrency, rate limits, retries and timeouts; a provider only
translates a request to its vendor's wire format and classifies errors.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpx
import pluggy

from fleetbench.errors import ProviderError, ProviderTimeoutError, TransientProviderError
from fleetbench.records import (
    ProviderRequest,
    ProviderResponse,
    StreamChunk,
    Summary,
    TestResult,
    Usage,
    Verdict,
    WorkItem,
)

__all__ = [
    "PLUGIN_API_VERSION",
    "AdapterSpec",
    "CostCapReached",
    "Evaluator",
    "EvaluatorContext",
    "EvaluatorSpec",
    "EventSubscriber",
    "Executor",
    "ExecutorSpec",
    "Exporter",
    "ExporterSpec",
    "ModelCall",
    "ModelEvaluator",
    "Provider",
    "ProviderConfig",
    "ProviderSpec",
    "RepositoryAdapter",
    "RepositoryContext",
    "RunInfo",
    "Secret",
    "SubscriberSpec",
    "hookimpl",
]

PLUGIN_API_VERSION = 1
"""The plugin API generation. A plugin module declares the generation it was written
for as ``FLEETBENCH_PLUGIN_API_VERSION``; a different value fails start-up loudly,
naming the plugin's distribution. Additive changes do not bump it."""

PROJECT_NAME = "fleetbench"
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Marks a function as an implementation of a fleetbench hook."""


class Secret:
    """A secret string (an API key) that never shows itself in repr, str or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that must send it (an HTTP header)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


# --------------------------------------------------------------------------- providers


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """How one ``provider:model`` entry of a manifest is configured.

    :param provider: the plugin name (``openai``), the part before the first ``:``.
    :param model: the model to send, exactly as the manifest names it.
    :param base_url: the manifest's ``base_url``, or ``None`` for the plugin's default.
    :param api_key: read from the environment variable the manifest names; never logged.
    :param timeout_s: how long one HTTP call may take.
    :param params: the manifest's ``params``: vendor-specific request fields.
    """

    provider: str
    model: str
    base_url: str | None = None
    api_key: Secret | None = None
    timeout_s: float = 60.0
    params: Mapping[str, Any] = field(default_factory=dict)


class Provider(abc.ABC):
    """Talks to one vendor for one configured ``provider:model``.

    Created once per run and provider entry, used concurrently by the executor, closed
    with :meth:`aclose`. ``http`` is the core's shared client whose transport is tuned
    so the client is never the bottleneck; use it rather than creating your own.
    """

    supports_streaming: bool = False

    def __init__(self, config: ProviderConfig, http: httpx.AsyncClient) -> None:
        self.config = config
        self.http = http

    @abc.abstractmethod
    async def generate(self, request: ProviderRequest) -> ProviderResponse:
        """Send one non-streaming request and return the whole answer.

        :raises ProviderError: (a subclass of it) when the call fails.
        """

    def stream(self, request: ProviderRequest) -> AsyncIterator[StreamChunk]:
        """Send one streaming request and yield its chunks as they arrive.

        The executor stamps the arrival of each chunk, so yield each one as soon as it
        is parsed. Report token usage in a chunk when the vendor sends it.
        """
        raise NotImplementedError(f"{type(self).__name__} does not support streaming")

    def classify_error(self, exc: BaseException) -> ProviderError | None:
        """Map an exception the provider let escape to a :class:`ProviderError`.

        The default maps httpx timeouts and transport failures to retryable errors;
        return ``None`` to let the exception count as a non-retryable error.
        """
        if isinstance(exc, ProviderError):
            return exc
        if isinstance(exc, httpx.TimeoutException):
            return ProviderTimeoutError(f"{type(exc).__name__}: request timed out")
        if isinstance(exc, httpx.TransportError):
            return TransientProviderError(f"{type(exc).__name__}: {exc}")
        return None

    def connection_key(self) -> str:
        """Requests sharing this key share connection limits (never key on a secret)."""
        return f"{self.config.provider}|{self.config.base_url or ''}"

    def max_connections(self) -> int | None:
        """An upper bound on concurrent connections this vendor tolerates, if any."""
        return None

    async def aclose(self) -> None:  # noqa: B027 - optional hook with a no-op default
        """Release what the provider holds. The shared ``http`` client is the core's."""


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """Declares a provider kind.

    :param name: the part before ``:`` in ``provider:model``.
    :param factory: builds a :class:`Provider` from its config and the shared client.
    :param default_api_key_env: where the key is read from when the manifest names no
        ``api_key_env``; ``None`` for providers that need no key.
    :param validate: checks a config (chiefly its ``params``) without creating a
        provider or touching the network; raises ``ValueError`` with a clear message,
        which ``fleetbench validate`` reports at the entry's location.
    """

    name: str
    factory: Callable[[ProviderConfig, httpx.AsyncClient], Provider]
    description: str = ""
    default_api_key_env: str | None = None
    validate: Callable[[ProviderConfig], None] | None = None


# -------------------------------------------------------------------------- evaluators


@runtime_checkable
class Evaluator(Protocol):
    """Judges one answer. Must be safe to call concurrently.

    An evaluator that calls a model itself (an LLM judge) is a :class:`ModelEvaluator`:
    it also defines ``bind``, and the core binds it to the run before its first use.
    """

    async def evaluate(self, item: WorkItem, response: ProviderResponse) -> Verdict:
        """Return a verdict; raise only for bugs (reported as an evaluator error)."""
        ...


@dataclass(frozen=True, slots=True)
class EvaluatorSpec:
    """Declares an evaluator kind. ``factory(options)`` raises ``ValueError`` with a
    clear message for bad options; validation reports it with its manifest location."""

    name: str
    factory: Callable[[Mapping[str, Any]], Evaluator]
    description: str = ""


@dataclass(frozen=True, slots=True)
class ModelCall:
    """One call an evaluator made through :meth:`EvaluatorContext.generate`.

    :param usage: the vendor's token usage, else an estimate (``estimated`` true).
    :param cost_usd: ``usage`` at the provider's price; ``None`` when it has none.
    """

    response: ProviderResponse
    usage: Usage
    cost_usd: float | None


class CostCapReached(Exception):
    """A call was refused: at its worst case it could take the run's evaluation
    spending past the evaluator's cost cap."""


class EvaluatorContext(abc.ABC):
    """What a run lends the evaluators that call a model (LLM judges): the manifest's
    provider entries, with their shared client, rate limits, retries and prices.

    One context serves the whole run and keeps its evaluation spending: every call made
    through it counts, whichever evaluator made it, so a cost cap covers all of the
    run's judging.
    """

    @property
    @abc.abstractmethod
    def providers(self) -> Sequence[str]:
        """The ``provider:model`` keys of the manifest's provider entries."""

    @abc.abstractmethod
    def cost_usd(self, provider: str, usage: Usage) -> float | None:
        """What ``usage`` costs on ``provider`` (its entry's ``pricing``, else the
        shipped table); ``None`` when the model has no price."""

    @abc.abstractmethod
    async def generate(self, provider: str, request: ProviderRequest, *,
                       max_cost_usd: float | None = None) -> ModelCall:
        """Send ``request`` to ``provider`` under its rate limits, timeout and retries.

        The entry's model is sent (whatever ``request.model`` says), never streamed, and
        the entry's ``params`` fill in the settings ``request`` leaves unset.

        :param max_cost_usd: refuse the call unless the run's evaluation spending, plus
            the calls in flight and this one at their worst case (every prompt byte a
            token and the whole ``max_tokens`` answered), stays within it.
        :raises CostCapReached: refused by ``max_cost_usd``.
        :raises ProviderError: the call failed after its retries.
        :raises RuntimeError: the context only validates a manifest.
        """


@runtime_checkable
class ModelEvaluator(Evaluator, Protocol):
    """An evaluator that calls a model. The core hands it the run's context through
    :meth:`bind` and uses the evaluator ``bind`` returns."""

    def bind(self, context: EvaluatorContext) -> Evaluator:
        """An evaluator that calls through ``context``.

        Validation binds too, with a context that cannot call (``fleetbench validate``):
        raise ``ValueError`` with a clear message for a provider the manifest lacks or
        a cap that cannot be checked, and it is reported at the evaluator's location.
        """
        ...


# ---------------------------------------------------------------- repository adapters


@dataclass(frozen=True, slots=True)
class RepositoryContext:
    """What an adapter knows about one manifest repository.

    ``path`` is already resolved against the manifest's folder; ``cache_dir`` is where
    an adapter may keep checkouts between runs.
    """

    repo_id: str
    path: Path
    git_url: str | None
    ref: str | None
    metadata: Mapping[str, str]
    cache_dir: Path


@runtime_checkable
class RepositoryAdapter(Protocol):
    """Maps a repository layout onto dataset files."""

    def locate_dataset(self, name: str) -> Path:
        """The file holding dataset ``name``.

        :raises FileNotFoundError: naming the places searched.
        """
        ...

    def discover_datasets(self) -> Sequence[str]:
        """The dataset names this repository offers, sorted."""
        ...


@dataclass(frozen=True, slots=True)
class AdapterSpec:
    """Declares a repository adapter kind (``native``, ``generic``, ``git`` …)."""

    name: str
    factory: Callable[[RepositoryContext], RepositoryAdapter]
    description: str = ""


# ------------------------------------------------------- exporters, executors, subscribers


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What an exporter knows about the run it writes artifacts for.

    An exporter gets it twice: :meth:`Exporter.open` receives the run as known when it
    starts (``status`` ``"running"``, no ``finished_at``, the warnings so far) and
    :meth:`Exporter.finalize` the final one (its end status, ``finished_at`` and every
    warning, the run's error included). Take status, timestamps and warnings from the
    final one.

    :param manifest: the resolved manifest (every default filled in) as JSON data.
    :param output_dir: ``{output.base_dir}/{run_id}/``; write only inside it.
    :param repositories: each repository's ``repo_id`` → its manifest ``metadata``.
    :param plugins: ``name`` → ``version`` of every plugin the run used.
    :param warnings: located warnings of the run (unpriced models, client lag …).
    """

    run_id: str
    fleet_id: str
    status: str
    output_dir: Path
    manifest: Mapping[str, Any]
    created_at: str
    started_at: str | None
    finished_at: str | None
    planned: int
    save_responses: bool
    pricing_version: str | None
    repositories: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    plugins: Mapping[str, str] = field(default_factory=dict)
    warnings: Sequence[str] = ()


@runtime_checkable
class Exporter(Protocol):
    """Writes one run's artifacts, streaming so memory stays flat.

    The core calls :meth:`open` when the run starts, then :meth:`write` once per result
    **in plan order** (read back from the run store, so resumed and uninterrupted runs
    export the same), then :meth:`finalize` with the exact summary and the final run.
    On a large run the calls come while the run executes, from a separate export worker
    process (a result is written as soon as every result before it in plan order is
    stored), so an exporter must not rely on state shared with the run's process. Calls
    are made one exporter at a time, never on the event loop; file I/O is fine.

    Optionally, an exporter may define ``abort()``: called instead of :meth:`finalize`
    when the export is abandoned (the run's process died, or another exporter failed),
    it removes whatever :meth:`open` and :meth:`write` left (temporary files).
    """

    def open(self, run: RunInfo) -> None:
        """Start writing (create files inside ``run.output_dir``). ``run`` is the run as
        known at its start: keep what does not change (ids, manifest, output folder)."""
        ...

    def write(self, result: TestResult) -> None:
        """Add one result."""
        ...

    def finalize(self, summary: Summary, run: RunInfo) -> Sequence[Path]:
        """Finish, close files and return the paths written. ``run`` is the final run:
        write its status, timestamps and warnings, not those seen by :meth:`open`."""
        ...


@dataclass(frozen=True, slots=True)
class ExporterSpec:
    """Declares an output format (the names in ``output.formats``).

    ``factory()`` builds a fresh :class:`Exporter` for one run; ``files`` names the
    artifacts it writes, for documentation and ``fleetbench plugins``.
    """

    name: str
    factory: Callable[[], Exporter]
    description: str = ""
    files: tuple[str, ...] = ()


@runtime_checkable
class Executor(Protocol):
    """Runs the tests of one run (or what is left of a resumed one)."""

    async def run(self) -> str | None:
        """Run every test, reporting each result through the plan's ``on_result``; return
        why the run stopped early (``continue_on_failure: false``), else ``None``."""
        ...

    # Optional: ``timed_in_this_process = False`` tells the core that the tests are timed in
    # other processes (e.g. Ray actors), so this process's event-loop lag cannot distort
    # their timings and does not warrant the "client was a bottleneck" warning.


@dataclass(frozen=True, slots=True)
class ExecutorSpec:
    """Declares an executor (``global_settings.executor``), e.g. ``local`` or ``ray``.

    ``factory(plan)`` gets the core's execution plan (the tests, the provider lanes with
    their limits, the evaluators and the result callback) and returns an
    :class:`Executor`. The plan's shape is defined by the core's local executor; an
    executor that runs elsewhere must apply the same limits, retries and timeouts.
    """

    name: str
    factory: Callable[[Any], Executor]
    description: str = ""


@runtime_checkable
class EventSubscriber(Protocol):
    """Sees every event of a run, in seq order, in batches. Must not mutate events; a
    subscriber that raises is logged and counted and never stops the run."""

    async def handle(self, events: Sequence[Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class SubscriberSpec:
    """Declares an event subscriber: ``factory()`` builds one per run."""

    name: str
    factory: Callable[[], EventSubscriber]
    description: str = ""

"""The run's :class:`~fleetbench.plugin.EvaluatorContext`: how evaluators that call a
model (LLM judges) reach the manifest's providers, and the ledger of what they spend.

A judge's call goes through the provider entry's lane, as its tests do: the same
provider object on the shared HTTP client, the same rpm/tpm buckets, timeout, error
classification and retries with backoff (:func:`~fleetbench._executor.generate_with_retries`).
Judge calls to one provider run at most its ``concurrency`` at a time, apart from its
own tests.

The ledger makes a cost cap hold under concurrency. Before a call, its worst case is
reserved: every UTF-8 byte of the system and user messages counted as a token (a
byte-level tokenizer never makes more) plus a few tokens of chat framing per message,
and the whole ``max_tokens`` answered, at the provider's full input and output price.
A call whose worst case would take spending plus reservations past the caller's
``max_cost_usd`` is refused with :class:`~fleetbench.plugin.CostCapReached`; after
the call its reservation is replaced by its real cost. Every call counts, capped or
not, so a cap covers all of the run's judging; a resumed run starts from what its
stored results already spent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from fleetbench._executor import ProviderLane, estimated_usage, generate_with_retries
from fleetbench._lanes import _price as entry_price
from fleetbench._manifest import FleetManifest
from fleetbench._pricing import Price, PricingTable, cost_usd
from fleetbench.plugin import CostCapReached, EvaluatorContext, ModelCall
from fleetbench.records import GenerationSettings, ProviderRequest, Usage

__all__ = ["FRAMING_TOKENS_PER_MESSAGE", "RunEvaluatorContext", "worst_case_usage"]

FRAMING_TOKENS_PER_MESSAGE = 8
"""Tokens a chat template may add around each message (role markers, separators), with
room to spare: vendors document 3–4."""


def worst_case_usage(request: ProviderRequest) -> Usage | None:
    """The most tokens ``request`` can use, ``None`` without a ``max_tokens`` bound."""
    settings = request.settings
    if settings.max_tokens is None:
        return None
    messages = [request.prompt, *([settings.system] if settings.system else [])]
    prompt = sum(len(m.encode("utf-8")) + FRAMING_TOKENS_PER_MESSAGE for m in messages)
    return Usage(prompt + FRAMING_TOKENS_PER_MESSAGE, settings.max_tokens)


class RunEvaluatorContext(EvaluatorContext):
    """The providers of one run, or of a manifest being validated (no ``lanes``).

    :param prices: each provider key's price (``None``: unpriced).
    :param lanes: the run's lanes; without them :meth:`generate` raises.
    :param layers: each provider key's ``params`` as a settings layer, under the
        settings of the evaluator's request.
    """

    def __init__(self, prices: Mapping[str, Price | None],
                 lanes: Mapping[str, ProviderLane] | None = None,
                 layers: Mapping[str, GenerationSettings] | None = None) -> None:
        self._prices = dict(prices)
        self._lanes = lanes
        self._layers = dict(layers or {})
        self._slots: dict[str, asyncio.Semaphore] = {}
        self.spent_usd = 0.0
        """What the run's evaluators spent; a resumed run sets what its results did."""
        self.reserved_usd = 0.0

    @classmethod
    def for_run(cls, lanes: Mapping[str, ProviderLane]) -> RunEvaluatorContext:
        """A context calling through ``lanes``."""
        # Imported here: the planner imports _resolve, which imports this module.
        from fleetbench._planner import _settings_from_params

        return cls({key: lane.price for key, lane in lanes.items()}, lanes,
                   {key: _settings_from_params(lane.provider.config.params)
                    for key, lane in lanes.items()})

    @classmethod
    def for_validation(cls, manifest: FleetManifest) -> RunEvaluatorContext:
        """A context that knows ``manifest``'s providers and prices and calls nothing."""
        pricing = PricingTable.shipped()
        return cls({entry.id: entry_price(entry, pricing) for entry in manifest.providers})

    @property
    def providers(self) -> Sequence[str]:
        return list(self._prices)

    def cost_usd(self, provider: str, usage: Usage) -> float | None:
        price = self._prices.get(provider)
        return cost_usd(usage, price) if price is not None else None

    async def generate(self, provider: str, request: ProviderRequest, *,
                       max_cost_usd: float | None = None) -> ModelCall:
        if self._lanes is None:
            raise RuntimeError("this evaluator context only validates a manifest")
        lane = self._lanes.get(provider)
        if lane is None:
            raise ValueError(f"no provider entry {provider!r} in this run")
        request = ProviderRequest(
            model=lane.provider.config.model, prompt=request.prompt,
            settings=self._layers[provider].overlaid_with(request.settings),
            stream=False, test_key=request.test_key, expected=request.expected)
        reserved = self._reserve(provider, request, max_cost_usd)
        try:
            async with self._slot(lane):
                response = await generate_with_retries(lane, request)
        finally:
            self.reserved_usd -= reserved
        usage = response.usage or estimated_usage(request.prompt, request.settings,
                                                  response.text)
        cost = self.cost_usd(provider, usage)
        self.spent_usd += cost or 0.0
        return ModelCall(response, usage, cost)

    def _reserve(self, provider: str, request: ProviderRequest,
                 max_cost_usd: float | None) -> float:
        """Reserve the call's worst-case cost, or refuse it if that breaks the cap."""
        worst = worst_case_usage(request)
        worst_usd = self.cost_usd(provider, worst) if worst is not None else None
        if max_cost_usd is not None:
            if worst_usd is None:
                raise CostCapReached(
                    f"max_cost_usd cannot be checked: {provider} has no price"
                    if worst is not None else "max_cost_usd needs the request's max_tokens")
            committed = self.spent_usd + self.reserved_usd
            if committed + worst_usd > max_cost_usd:
                raise CostCapReached(
                    f"cost cap ${max_cost_usd:g} reached: the run's judging has spent "
                    f"${self.spent_usd:.6f} (${self.reserved_usd:.6f} more in flight) and "
                    f"this call could cost up to ${worst_usd:.6f}")
        self.reserved_usd += worst_usd or 0.0
        return worst_usd or 0.0

    def _slot(self, lane: ProviderLane) -> asyncio.Semaphore:
        slot = self._slots.get(lane.key)
        if slot is None:
            slot = self._slots[lane.key] = asyncio.Semaphore(lane.concurrency)
        return slot

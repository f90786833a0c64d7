"""Prices and cost: a versioned table shipped with fleetbench, overridable per manifest.

Cost = uncached input × input price + cached input × cached price + output × output
price, per million tokens. A model without a price costs ``None`` (never a silent flat
rate) and the run carries a warning naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from fleetbench.records import Usage

__all__ = ["Price", "PricingTable", "cost_usd"]


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cached_input: float | None = None


def cost_usd(usage: Usage, price: Price) -> float:
    """What ``usage`` costs at ``price``; cached input falls back to the input price."""
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    cached_price = price.cached_input if price.cached_input is not None else price.input
    return ((usage.input_tokens - cached) * price.input + cached * cached_price
            + usage.output_tokens * price.output) / 1_000_000


class PricingTable:
    """The shipped table: ``(provider, model)`` → :class:`Price`.

    A dated snapshot name (``gpt-4o-2024-08-06``) falls back to the longest listed
    model it starts with, followed by ``-`` (``gpt-4o``).
    """

    def __init__(self, data: dict[str, Any]) -> None:
        self.version: str = data["version"]
        self.as_of: str = data["as_of"]
        self._models: dict[str, dict[str, Price]] = {
            provider: {model: Price(p["input"], p["output"], p.get("cached_input"))
                       for model, p in models.items()}
            for provider, models in data["models"].items()
        }

    @classmethod
    def shipped(cls) -> PricingTable:
        """The table in ``fleetbench/data/pricing.json``."""
        return _shipped()

    def price(self, provider: str, model: str) -> Price | None:
        models = self._models.get(provider, {})
        if model in models:
            return models[model]
        prefixes = [m for m in models if model.startswith(m + "-")]
        return models[max(prefixes, key=len)] if prefixes else None


@cache
def _shipped() -> PricingTable:
    text = resources.files("fleetbench").joinpath("data/pricing.json").read_text("utf-8")
    return PricingTable(json.loads(text))

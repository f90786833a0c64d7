"""Builds the executor's provider lanes from a manifest: provider objects on the shared
HTTP client, their limits, retry budget, timeout, price and API key.

API keys are read here, from the environment variable the manifest names (or the
plugin's default), wrapped in :class:`~fleetbench.plugin.Secret` and handed to the
provider; they are never logged, stored or reported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx

from fleetbench._executor import ProviderLane
from fleetbench._http import create_http_client
from fleetbench._limits import TokenBucket
from fleetbench._manifest import FleetManifest, ProviderEntry
from fleetbench._plugins import PluginHost
from fleetbench._pricing import Price, PricingTable
from fleetbench.errors import ManifestError, Problem
from fleetbench.plugin import ProviderConfig, Secret

DEFAULT_CONCURRENCY = 16
DEFAULT_MAX_RETRIES = 3
DEFAULT_TIMEOUT_S = 60.0


@dataclass(slots=True)
class Lanes:
    """The lanes of one run and what they share; close with :meth:`aclose`."""

    by_key: dict[str, ProviderLane]
    http: httpx.AsyncClient
    warnings: list[str] = field(default_factory=list)

    async def aclose(self) -> None:
        for lane in self.by_key.values():
            with contextlib.suppress(Exception):
                await lane.provider.aclose()
        await self.http.aclose()


def build_lanes(manifest: FleetManifest, host: PluginHost, pricing: PricingTable,
                env: Mapping[str, str]) -> Lanes:
    """One lane per provider entry.

    :raises ManifestError: API keys missing from the environment (all of them at once).
    """
    problems: list[Problem] = []
    keys = [_api_key(i, entry, host, env, problems) for i, entry in
            enumerate(manifest.providers)]
    if problems:
        raise ManifestError(problems)
    total = sum(e.concurrency or DEFAULT_CONCURRENCY for e in manifest.providers)
    http = create_http_client(max_connections=max(total, 1))
    lanes = Lanes({}, http)
    unpriced = []
    for entry, key in zip(manifest.providers, keys, strict=True):
        price = _price(entry, pricing)
        if price is None:
            unpriced.append(entry.id)
        lanes.by_key[entry.id] = _lane(manifest, host, entry, key, price, http)
    if unpriced:
        lanes.warnings.append(
            f"no price known for {', '.join(unpriced)} (pricing table {pricing.version}): "
            "their cost is null; set `pricing:` on the provider entry")
    return lanes


def _api_key(index: int, entry: ProviderEntry, host: PluginHost, env: Mapping[str, str],
             problems: list[Problem]) -> Secret | None:
    spec = host.providers[entry.provider]
    variable = entry.api_key_env or spec.default_api_key_env
    if variable is None:
        return None
    value = env.get(variable)
    if not value:
        where = f"providers[{index}]" + (".api_key_env" if entry.api_key_env else "")
        problems.append(Problem(where, f"environment variable {variable} is not set "
                                       f"(the API key of {entry.id!r})"))
        return None
    return Secret(value)


def _price(entry: ProviderEntry, pricing: PricingTable) -> Price | None:
    if entry.pricing is not None:
        p = entry.pricing
        return Price(p.input_per_mtok, p.output_per_mtok, p.cached_input_per_mtok)
    return pricing.price(entry.provider, entry.model)


def _lane(manifest: FleetManifest, host: PluginHost, entry: ProviderEntry,
          key: Secret | None, price: Price | None, http: httpx.AsyncClient) -> ProviderLane:
    settings = manifest.global_settings
    timeout_s = entry.timeout_s or DEFAULT_TIMEOUT_S
    config = ProviderConfig(provider=entry.provider, model=entry.model,
                            base_url=entry.base_url, api_key=key, timeout_s=timeout_s,
                            params=entry.params)
    provider = host.providers[entry.provider].factory(config, http)
    concurrency = entry.concurrency or DEFAULT_CONCURRENCY
    vendor_cap = provider.max_connections()
    if vendor_cap is not None:
        concurrency = min(concurrency, vendor_cap)
    max_retries = entry.max_retries
    if max_retries is None:
        max_retries = settings.max_retries if settings.max_retries is not None \
            else DEFAULT_MAX_RETRIES
    return ProviderLane(
        key=entry.id, provider=provider, concurrency=concurrency, max_retries=max_retries,
        timeout_s=timeout_s, price=price,
        rpm=TokenBucket(entry.rpm) if entry.rpm else None,
        tpm=TokenBucket(entry.tpm) if entry.tpm else None,
    )

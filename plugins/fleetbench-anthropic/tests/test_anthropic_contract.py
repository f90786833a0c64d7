"""The provider contract (``fleetbench.testing.ProviderContract``): what every provider
plugin owes the executor, each check against a fresh fake anthropic vendor."""

from __future__ import annotations

import httpx
import pytest
from anthropic_support import config
from fleetbench_anthropic import AnthropicProvider

from fleetbench.testing import ProviderContract


@pytest.mark.parametrize("check", ProviderContract.CHECKS)
async def test_the_provider_contract(check: str, http: httpx.AsyncClient) -> None:
    contract = ProviderContract("anthropic", lambda url: AnthropicProvider(config(url), http))
    await contract.run(check)

"""The provider contract (``fleetbench.testing.ProviderContract``): what every provider
plugin owes the executor, each check against a fresh fake openai vendor."""

from __future__ import annotations

import httpx
import pytest
from fleetbench_openai import OpenAIProvider
from openai_support import config

from fleetbench.testing import ProviderContract


@pytest.mark.parametrize("check", ProviderContract.CHECKS)
async def test_the_provider_contract(check: str, http: httpx.AsyncClient) -> None:
    contract = ProviderContract("openai", lambda url: OpenAIProvider(config(url), http))
    await contract.run(check)

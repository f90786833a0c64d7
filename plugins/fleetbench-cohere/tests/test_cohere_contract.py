"""The provider contract (``fleetbench.testing.ProviderContract``): what every provider
plugin owes the executor, each check against a fresh fake cohere vendor."""

from __future__ import annotations

import httpx
import pytest
from cohere_support import config
from fleetbench_cohere import CohereProvider

from fleetbench.testing import ProviderContract


@pytest.mark.parametrize("check", ProviderContract.CHECKS)
async def test_the_provider_contract(check: str, http: httpx.AsyncClient) -> None:
    contract = ProviderContract("cohere", lambda url: CohereProvider(config(url), http))
    await contract.run(check)

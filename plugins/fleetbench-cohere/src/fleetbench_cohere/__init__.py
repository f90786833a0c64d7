"""fleetbench provider plugin for Cohere's v2 Chat API.

Provider ``cohere:<model>``: ``POST {base_url}/v2/chat``, ``base_url`` by default
``https://api.cohere.com``, the key from ``CO_API_KEY`` (the variable Cohere's SDKs read;
name another with ``api_key_env``) sent as ``Authorization: Bearer``. Streaming and not.

It imports only fleetbench's public modules. See the README for the ``params`` it accepts.
"""

from __future__ import annotations

from fleetbench.plugin import ProviderConfig, ProviderSpec, hookimpl

from ._options import DEFAULT_BASE_URL, Options
from ._provider import CohereProvider

__all__ = ["DEFAULT_API_KEY_ENV", "DEFAULT_BASE_URL", "FLEETBENCH_PLUGIN_API_VERSION",
           "CohereProvider"]  # fmt: skip

FLEETBENCH_PLUGIN_API_VERSION = 1
DEFAULT_API_KEY_ENV = "CO_API_KEY"
"""Cohere's SDKs read ``CO_API_KEY`` (documented; they also accept ``COHERE_API_KEY``)."""


def _validate(config: ProviderConfig) -> None:
    Options.from_config(config)


@hookimpl
def fleetbench_register_providers() -> list[ProviderSpec]:
    """The ``cohere`` provider."""
    return [
        ProviderSpec(
            name="cohere",
            factory=CohereProvider,
            description="Cohere v2 Chat API (streaming and not); base_url = the host.",
            default_api_key_env=DEFAULT_API_KEY_ENV,
            validate=_validate,
        ),
    ]

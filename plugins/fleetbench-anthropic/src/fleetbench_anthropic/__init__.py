"""fleetbench provider plugin for Anthropic's Messages API.

Provider ``anthropic:<model>``: ``POST {base_url}/v1/messages``, ``base_url`` (the host)
defaulting to ``https://api.anthropic.com``, key from ``ANTHROPIC_API_KEY`` (or the
manifest's ``api_key_env``) sent as ``x-api-key``, with ``anthropic-version: 2023-06-01``.

It imports only fleetbench's public modules. See the README for the ``params`` it accepts.
"""

from __future__ import annotations

from fleetbench.plugin import ProviderConfig, ProviderSpec, hookimpl

from ._options import ANTHROPIC_DEFAULT_BASE_URL, DEFAULT_ANTHROPIC_VERSION, Options
from ._provider import AnthropicProvider

__all__ = [
    "ANTHROPIC_DEFAULT_BASE_URL",
    "DEFAULT_ANTHROPIC_VERSION",
    "FLEETBENCH_PLUGIN_API_VERSION",
    "AnthropicProvider",
]

FLEETBENCH_PLUGIN_API_VERSION = 1


def _validate(config: ProviderConfig) -> None:
    Options.from_config(config)


@hookimpl
def fleetbench_register_providers() -> list[ProviderSpec]:
    """The ``anthropic`` provider."""
    return [
        ProviderSpec(
            name="anthropic",
            factory=AnthropicProvider,
            description="Anthropic Messages API (base_url = the host, e.g. "
            "https://api.anthropic.com).",
            default_api_key_env="ANTHROPIC_API_KEY",
            validate=_validate,
        ),
    ]

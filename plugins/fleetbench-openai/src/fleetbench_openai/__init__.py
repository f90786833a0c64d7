"""fleetbench provider plugin for OpenAI Chat Completions, compatible servers and Azure.

Providers:

* ``openai:<model>``: ``https://api.openai.com/v1`` by default, key from ``OPENAI_API_KEY``;
  set ``base_url`` for any OpenAI-compatible server (vLLM, llama.cpp, Ollama, Groq …).
* ``azure-openai:<deployment>``: ``base_url`` is the resource endpoint, key from
  ``AZURE_OPENAI_API_KEY`` sent as ``api-key``, ``api_version`` param.

It imports only fleetbench's public modules. See the README for the ``params`` it accepts.
"""

from __future__ import annotations

from fleetbench.plugin import ProviderConfig, ProviderSpec, hookimpl

from ._options import AZURE_DEFAULT_API_VERSION, OPENAI_DEFAULT_BASE_URL, Options
from ._provider import AzureOpenAIProvider, OpenAIProvider

__all__ = [
    "AZURE_DEFAULT_API_VERSION",
    "FLEETBENCH_PLUGIN_API_VERSION",
    "OPENAI_DEFAULT_BASE_URL",
    "AzureOpenAIProvider",
    "OpenAIProvider",
]

FLEETBENCH_PLUGIN_API_VERSION = 1


def _validate_openai(config: ProviderConfig) -> None:
    Options.from_config(config, azure=False)


def _validate_azure(config: ProviderConfig) -> None:
    Options.from_config(config, azure=True)


@hookimpl
def fleetbench_register_providers() -> list[ProviderSpec]:
    """The ``openai`` and ``azure-openai`` providers."""
    return [
        ProviderSpec(
            name="openai",
            factory=OpenAIProvider,
            description="OpenAI Chat Completions; any OpenAI-compatible server via base_url.",
            default_api_key_env="OPENAI_API_KEY",
            validate=_validate_openai,
        ),
        ProviderSpec(
            name="azure-openai",
            factory=AzureOpenAIProvider,
            description="Azure OpenAI chat completions (base_url = resource endpoint, "
            "model = deployment).",
            default_api_key_env="AZURE_OPENAI_API_KEY",
            validate=_validate_azure,
        ),
    ]

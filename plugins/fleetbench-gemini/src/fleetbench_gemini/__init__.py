"""fleetbench provider plugin for Google Gemini (the Generative Language API).

Provider ``gemini:<model>``: ``https://generativelanguage.googleapis.com`` by default, the
key read from ``GEMINI_API_KEY`` (or the variable the manifest's ``api_key_env`` names,
e.g. ``GOOGLE_API_KEY``) and sent in the ``x-goog-api-key`` header.

It imports only fleetbench's public modules. See the README for the ``params`` it accepts.
"""

from __future__ import annotations

from fleetbench.plugin import ProviderConfig, ProviderSpec, hookimpl

from ._options import DEFAULT_API_VERSION, GEMINI_DEFAULT_BASE_URL, Options
from ._provider import GeminiProvider

__all__ = [
    "DEFAULT_API_VERSION",
    "FLEETBENCH_PLUGIN_API_VERSION",
    "GEMINI_DEFAULT_BASE_URL",
    "GeminiProvider",
]

FLEETBENCH_PLUGIN_API_VERSION = 1


def _validate(config: ProviderConfig) -> None:
    Options.from_config(config)


@hookimpl
def fleetbench_register_providers() -> list[ProviderSpec]:
    """The ``gemini`` provider."""
    return [
        ProviderSpec(
            name="gemini",
            factory=GeminiProvider,
            description="Google Gemini generateContent / streamGenerateContent (SSE).",
            default_api_key_env="GEMINI_API_KEY",
            validate=_validate,
        )
    ]

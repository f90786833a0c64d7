"""The manifest ``params`` this plugin understands, checked once, before any request.

Two kinds of keys live in a provider entry's ``params``:

* **plugin options** (this module) steer the plugin and are never sent in the body:
  ``anthropic_version``, ``beta``, ``headers``, ``default_max_tokens``, ``max_connections``;
* everything else is a **request field**: the sampling settings fleetbench knows
  (``temperature``, ``top_p``, ``max_tokens``, ``stop``, ``system``) are checked here and
  sent in their wire form; any other key (``top_k``, ``metadata``, ``thinking``,
  ``service_tier`` …) is passed through into the JSON body untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fleetbench.plugin import ProviderConfig
from fleetbench.providerkit import check_sampling_params, extra_headers, int_param

__all__ = [
    "ANTHROPIC_DEFAULT_BASE_URL",
    "CONTROL_PARAMS",
    "DEFAULT_ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "RESERVED_FIELDS",
    "Options",
]

ANTHROPIC_DEFAULT_BASE_URL = "https://api.anthropic.com"
"""The host only: the plugin adds ``/v1/messages``, as Anthropic's SDKs do."""
DEFAULT_ANTHROPIC_VERSION = "2023-06-01"
"""The ``anthropic-version`` header: the one API version the Messages API has had."""
DEFAULT_MAX_TOKENS = 4096
"""Anthropic requires ``max_tokens``; this is sent when no settings layer sets one."""

CONTROL_PARAMS = frozenset({"anthropic_version", "beta", "headers", "default_max_tokens",
                            "max_connections"})  # fmt: skip
RESERVED_FIELDS = frozenset({"model", "messages", "stream", "stop_sequences"})
"""Body fields the plugin owns; a ``params`` key with one of these names is an error."""

_PLUGIN_HEADERS = ("x-api-key", "anthropic-version", "anthropic-beta", "authorization",
                   "content-type", "content-length")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Options:
    """The validated plugin options of one provider entry."""

    headers: Mapping[str, str]
    """Every request header but the key: version, beta features, extra headers."""
    default_max_tokens: int
    max_connections: int | None

    @classmethod
    def from_config(cls, config: ProviderConfig) -> Options:
        """Check ``config.params`` and ``base_url``.

        :raises ValueError: naming the first offending param and what it accepts.
        """
        params = config.params
        _check_base_url(config.base_url)
        check_sampling_params(params, temperature_max=1.0)
        reserved = sorted(RESERVED_FIELDS & set(params))
        if reserved:
            hint = "use 'stop'" if reserved[0] == "stop_sequences" else (
                "the model comes from the provider id, messages from the dataset, stream "
                "from the manifest")
            raise ValueError(f"param {reserved[0]!r} is set by the plugin ({hint})")
        int_param(params, "top_k", minimum=0)
        version = params.get("anthropic_version", DEFAULT_ANTHROPIC_VERSION)
        if not isinstance(version, str) or not version.strip():
            raise ValueError("param 'anthropic_version' must be a non-empty string, "
                             f"e.g. {DEFAULT_ANTHROPIC_VERSION}")
        headers = {"anthropic-version": version.strip()}
        beta = _beta(params.get("beta"))
        if beta:
            headers["anthropic-beta"] = beta
        headers.update(extra_headers(params.get("headers"), forbidden=_PLUGIN_HEADERS))
        return cls(headers, int_param(params, "default_max_tokens", default=DEFAULT_MAX_TOKENS),
                   int_param(params, "max_connections"))


def _beta(value: Any) -> str:
    """``beta``: one feature name or a list of them, sent as ``anthropic-beta: a,b``."""
    if value is None:
        return ""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(
        isinstance(n, str) and n.strip() and "," not in n for n in names
    ):
        raise ValueError("param 'beta' must be a beta feature name or a list of them, "
                         "e.g. [prompt-caching-2024-07-31]")
    return ",".join(n.strip() for n in names)


def _check_base_url(base_url: str | None) -> None:
    """The base URL is the host (and any proxy prefix), never one that already ends in the
    API's own path: OpenAI-style ``…/v1`` bases would otherwise become ``/v1/v1/messages``."""
    if base_url is None:
        return
    path = urlsplit(base_url).path.rstrip("/")
    if path.endswith(("/v1", "/v1/messages")):
        raise ValueError(
            f"base_url {base_url!r} must not include /v1: give the host, e.g. "
            "https://api.anthropic.com (the plugin adds /v1/messages)"
        )

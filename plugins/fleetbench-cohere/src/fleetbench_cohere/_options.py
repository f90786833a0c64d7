"""The manifest ``params`` this plugin understands, checked once, before any request.

Two kinds of keys live in a provider entry's ``params``:

* **plugin options** (this module) steer the plugin and are never sent: ``client_name``,
  ``headers``, ``usage_from``, ``max_connections``;
* everything else is a **request field**: the sampling settings fleetbench knows
  (``temperature``, ``top_p``, ``max_tokens``, ``stop``, ``system``) are checked here and
  sent in Cohere's form (``p``, ``stop_sequences``, a ``system`` message); any other key
  (``seed``, ``k``, ``frequency_penalty``, ``safety_mode`` …) is passed through into the JSON
  body untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleetbench.plugin import ProviderConfig
from fleetbench.providerkit import check_sampling_params, extra_headers, int_param

__all__ = [
    "CONTROL_PARAMS",
    "DEFAULT_BASE_URL",
    "MAX_STOP_SEQUENCES",
    "RESERVED_FIELDS",
    "USAGE_SOURCES",
    "WIRE_ALIASES",
    "Options",
]

DEFAULT_BASE_URL = "https://api.cohere.com"
"""The host, as Cohere's SDKs are configured; the plugin adds ``/v2/chat``."""

CONTROL_PARAMS = frozenset({"client_name", "headers", "usage_from", "max_connections"})
RESERVED_FIELDS = frozenset({"model", "messages", "stream"})
"""Body fields the plugin owns; a ``params`` key with one of these names is an error."""
WIRE_ALIASES = {"p": "top_p", "stop_sequences": "stop"}
"""Cohere's names for settings fleetbench already has: one way to set each, not two."""
USAGE_SOURCES = ("billed_units", "tokens")
MAX_STOP_SEQUENCES = 5
"""Cohere's documented limit on ``stop_sequences``."""
TEMPERATURE_MAX = 5.0
"""A generous ceiling: Cohere documents only that the temperature is non-negative."""

_FORBIDDEN_HEADERS = ("authorization", "content-type", "content-length")


@dataclass(frozen=True, slots=True)
class Options:
    """The validated plugin options of one provider entry."""

    headers: Mapping[str, str]
    """Extra request headers (``X-Client-Name`` from ``client_name`` among them)."""
    usage_from: str
    """Which of Cohere's two counts becomes the usage: ``billed_units`` or ``tokens``."""
    max_connections: int | None

    @classmethod
    def from_config(cls, config: ProviderConfig) -> Options:
        """Check ``config.params``.

        :raises ValueError: naming the first offending param and what it accepts.
        """
        params = config.params
        check_sampling_params(params, temperature_max=TEMPERATURE_MAX)
        check_request_fields(params)
        stop = params.get("stop")
        if isinstance(stop, list) and len(stop) > MAX_STOP_SEQUENCES:
            raise ValueError(f"param 'stop' may hold at most {MAX_STOP_SEQUENCES} sequences "
                             "for cohere")  # fmt: skip
        usage_from = params.get("usage_from", "billed_units")
        if usage_from not in USAGE_SOURCES:
            raise ValueError(f"param 'usage_from' must be one of {', '.join(USAGE_SOURCES)}")
        headers = extra_headers(params.get("headers"), forbidden=_FORBIDDEN_HEADERS)
        client_name = params.get("client_name")
        if client_name is not None:
            if not isinstance(client_name, str) or not client_name.strip():
                raise ValueError("param 'client_name' must be a non-empty string")
            headers["X-Client-Name"] = client_name.strip()
        return cls(headers, usage_from, int_param(params, "max_connections"))


def check_request_fields(params: Mapping[str, Any]) -> None:
    """Refuse ``params`` keys the plugin owns or that duplicate a fleetbench setting.

    :raises ValueError: naming the key and what to use instead.
    """
    for key in params:
        if key in RESERVED_FIELDS:
            raise ValueError(
                f"param {key!r} is set by the plugin (the model comes from the provider id, "
                "messages from the dataset, stream from the manifest)"
            )
        if key in WIRE_ALIASES:
            setting = WIRE_ALIASES[key]
            raise ValueError(
                f"param {key!r} is Cohere's name for the setting {setting!r}: set {setting!r} "
                f"instead (it is sent as {key!r})"
            )

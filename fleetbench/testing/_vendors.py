"""Which wire format serves which ``--vendor`` name (imported on first use)."""

from __future__ import annotations

import importlib

from fleetbench.testing._wire import WireFormat

__all__ = ["VENDORS", "wire_format"]

_WIRE_FORMATS = {
    "openai": "fleetbench.testing._openai:OpenAIWire",
    "anthropic": "fleetbench.testing._anthropic:AnthropicWire",
    "cohere": "fleetbench.testing._cohere:CohereWire",
    "gemini": "fleetbench.testing._gemini:GeminiWire",
}

VENDORS: tuple[str, ...] = tuple(_WIRE_FORMATS)
"""The vendors the fake servers speak."""


def wire_format(vendor: str) -> WireFormat:
    """A fresh wire format for ``vendor`` (one of :data:`VENDORS`)."""
    try:
        module_name, _, class_name = _WIRE_FORMATS[vendor].partition(":")
    except KeyError:
        raise ValueError(f"unknown vendor {vendor!r}; known: {', '.join(VENDORS)}") from None
    wire: type[WireFormat] = getattr(importlib.import_module(module_name), class_name)
    return wire()

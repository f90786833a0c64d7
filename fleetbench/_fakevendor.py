"""Transitional shim (the fake vendor moved to :mod:`fleetbench.testing`); removed soon."""

from typing import Any

from fleetbench.testing import FakeVendorConfig as FakeOpenAIConfig
from fleetbench.testing import FakeVendorProcess as FakeOpenAIServerProcess
from fleetbench.testing import FakeVendorServer, Fault, TraceEntry
from fleetbench.testing._fake import REQUEST_ID_HEADER

__all__ = ["REQUEST_ID_HEADER", "FakeOpenAIConfig", "FakeOpenAIServer",
           "FakeOpenAIServerProcess", "Fault", "TraceEntry"]


def FakeOpenAIServer(port: int = 0, **kwargs: Any) -> FakeVendorServer:  # noqa: N802
    return FakeVendorServer("openai", port=port, **kwargs)

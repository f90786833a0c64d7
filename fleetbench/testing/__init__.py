"""Test support for fleetbench and its plugin authors.

Fake vendor servers: real HTTP servers on 127.0.0.1 that speak the OpenAI (and Azure
OpenAI), Anthropic, Cohere v2 and Gemini wire formats, with knobs for latency, TTFT, ITL,
output tokens and tokens per chunk, injected faults on a scripted or seeded schedule, request
counting and a trace of each request's server-side timings (received, first token, last
byte) so that measured numbers can be checked against the truth::

    from fleetbench.testing import FakeVendorServer, Fault

    async with FakeVendorServer("anthropic", ttft_ms=50, itl_ms=10,
                                faults=(Fault.rate_limited({"retry-after": "1"}),)) as fake:
        ...  # point the provider at fake.base_url; fake.requests, fake.trace afterwards

``fleetbench mock-server --vendor anthropic`` starts one from the command line, and
:func:`run_fleet` runs a provider through the whole engine in a few lines;
:class:`ProviderContract` checks the behaviour every provider plugin owes the executor;
:func:`local_server` serves a handler of your own for what no fake vendor scripts. Guide:
docs/testing.md.
"""

from fleetbench.testing._contract import ProviderContract
from fleetbench.testing._fake import (
    REQUEST_ID_HEADER,
    CapturedRequest,
    FakeVendorConfig,
    FakeVendorServer,
    Fault,
    TraceEntry,
    clock_description,
)
from fleetbench.testing._fleet import FleetRun, assert_secret_absent, run_fleet
from fleetbench.testing._local import local_server
from fleetbench.testing._process import FakeVendorProcess
from fleetbench.testing._vendors import VENDORS

__all__ = [
    "REQUEST_ID_HEADER",
    "VENDORS",
    "CapturedRequest",
    "FakeVendorConfig",
    "FakeVendorProcess",
    "FakeVendorServer",
    "Fault",
    "FleetRun",
    "ProviderContract",
    "TraceEntry",
    "assert_secret_absent",
    "clock_description",
    "local_server",
    "run_fleet",
]

"""The behaviour every HTTP provider plugin owes the executor, as reusable checks.

Each check starts a fresh fake vendor (:class:`FakeVendorServer`) for ``vendor``, builds the
plugin's provider for it with ``make_provider(base_url)`` and asserts one promise of the
provider contract (docs/testing.md): answers and vendor usage, multi-token stream chunks,
how each failure is classified (which decides what the executor retries), retry hints,
clear errors for malformed and truncated bodies, and a prompt hang-up on cancellation.
fleetbench's four vendor plugins run them all; a third-party plugin runs them in one
parametrized test::

    @pytest.mark.parametrize("check", ProviderContract.CHECKS)
    async def test_contract(check: str, http: httpx.AsyncClient) -> None:
        contract = ProviderContract("openai", lambda url: MyProvider(my_config(url), http))
        await contract.run(check)
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from fleetbench.errors import (
    AuthenticationError,
    MalformedResponseError,
    ProviderError,
    RateLimitedError,
    TransientProviderError,
)
from fleetbench.plugin import Provider
from fleetbench.records import GenerationSettings, ProviderRequest, ProviderResponse
from fleetbench.testing._fake import CLIENT_CLOSED_REQUEST, FakeVendorServer, Fault

__all__ = ["ProviderContract"]

ProviderFactory = Callable[[str], Provider]
"""``base_url`` -> the plugin's provider, configured with a key and the test's client."""


class ProviderContract:
    """The provider contract's checks for one plugin; see the module docstring."""

    CHECKS: tuple[str, ...] = (
        "answers_with_vendor_usage",
        "streams_multi_token_chunks_with_usage",
        "wrong_key_is_an_authentication_error",
        "rate_limit_carries_the_retry_hint",
        "server_errors_are_transient",
        "malformed_answer_is_a_clear_error",
        "truncated_stream_is_not_an_answer",
        "connection_cut_is_transient",
        "cancellation_hangs_up_promptly",
    )

    def __init__(self, vendor: str, make_provider: ProviderFactory, *,
                 model: str = "contract-model") -> None:  # fmt: skip
        self.vendor = vendor
        self.make_provider = make_provider
        self.model = model

    async def run(self, check: str) -> None:
        """Run the check named ``check`` (one of :attr:`CHECKS`)."""
        if check not in self.CHECKS:
            raise ValueError(f"unknown check {check!r}; known: {', '.join(self.CHECKS)}")
        await getattr(self, check)()

    def _request(self, *, stream: bool) -> ProviderRequest:
        return ProviderRequest(model=self.model, prompt="Say hello",
                               settings=GenerationSettings(max_tokens=64), stream=stream,
                               test_key=f"repo/contract/{self.vendor}:{self.model}/t0")

    def _fake(self, *faults: Fault, **knobs: Any) -> FakeVendorServer:
        return FakeVendorServer(self.vendor, faults=faults, **knobs)

    async def _collect(self, provider: Provider) -> ProviderResponse:
        texts: list[str] = []
        usage = finish = None
        async for chunk in provider.stream(self._request(stream=True)):
            texts.append(chunk.text)
            usage = chunk.usage or usage
            finish = chunk.finish_reason or finish
        return ProviderResponse("".join(texts), usage, finish)

    async def failure(self, *faults: Fault, stream: bool = False,
                      **knobs: Any) -> ProviderError:  # fmt: skip
        """The error the provider's first call ends with, as the executor classifies it,
        against a fake that applies ``faults`` (and ``knobs``, e.g. ``api_key``): for a
        plugin's own tables of vendor failures."""
        async with self._fake(*faults, **knobs) as fake:
            return await self._failure(self.make_provider(fake.base_url), stream=stream)

    async def expect_failure(self, fault: Fault, kind: type[ProviderError], text: str, *,
                             stream: bool, retry_after_s: float | None = None,
                             secret: str | None = None, **knobs: Any) -> ProviderError:
        """Provoke ``fault`` (see :meth:`failure`) and check the error: exactly ``kind``,
        ``text`` in its message, ``secret`` nowhere in it, and, given ``retry_after_s``,
        that retry hint. A stream-only fault met by a non-streaming call reaches the client
        as a body that is not JSON (that is what the fake sends), so a
        ``MalformedResponseError`` is expected then."""
        if fault.kind == "stream_error" and not stream:
            kind, text = MalformedResponseError, "not valid JSON"
        error = await self.failure(fault, stream=stream, **knobs)
        assert type(error) is kind, repr(error)
        assert text in error.message, error.message
        if secret is not None:
            assert secret not in str(error), "the secret leaked into the error"
        if retry_after_s is not None:
            assert error.retry_after_s is not None, "no retry hint"
            assert math.isclose(error.retry_after_s, retry_after_s, rel_tol=1e-6), \
                error.retry_after_s
        return error

    async def expect_stream_failures(
            self, expected: Sequence[tuple[Fault, type[ProviderError], str]],
            **knobs: Any) -> list[str]:
        """Stream once per ``(fault, kind, pattern)`` against one fake that applies the
        faults in order; each stream must end with exactly ``kind``, its message matching
        the regular expression ``pattern``. Returns the texts of every chunk the streams
        yielded before failing, in order (the text a vendor sent before it failed)."""
        seen: list[str] = []
        async with self._fake(*(fault for fault, _, _ in expected), **knobs) as fake:
            provider = self.make_provider(fake.base_url)
            for fault, kind, pattern in expected:
                failure: Exception | None = None
                try:
                    async for chunk in provider.stream(self._request(stream=True)):
                        seen.append(chunk.text)
                except Exception as error:
                    failure = error
                assert type(failure) is kind, f"{fault}: {failure!r}"
                assert isinstance(failure, ProviderError)
                assert re.search(pattern, failure.message), failure.message
        assert fake.requests == len(expected), fake.requests
        return seen

    async def _failure(self, provider: Provider, *, stream: bool) -> ProviderError:
        """The error a call ends with, as the executor classifies it."""
        failure: Exception | None = None
        try:
            if stream:
                await self._collect(provider)
            else:
                await provider.generate(self._request(stream=False))
        except Exception as error:
            failure = error
        if failure is None:
            raise AssertionError("the call succeeded; it should have failed")
        if isinstance(failure, ProviderError):
            return failure
        classified = provider.classify_error(failure)  # what the executor does
        if classified is None:
            raise AssertionError(f"{type(failure).__name__} was not classified: {failure!r}")
        return classified

    async def answers_with_vendor_usage(self) -> None:
        """A whole answer: its text and the vendor's own token counts."""
        async with self._fake(answer="Hello there, friend") as fake:
            response = await self.make_provider(fake.base_url).generate(
                self._request(stream=False))
        assert response.text == "Hello there, friend", response.text
        assert response.usage is not None, "usage must come from the vendor"
        assert not response.usage.estimated
        assert response.usage.output_tokens == 3, response.usage
        assert response.usage.input_tokens >= 1, response.usage

    async def streams_multi_token_chunks_with_usage(self) -> None:
        """Chunks of several tokens: every text piece yielded as it comes, the usage at the
        end counting tokens, not chunks (ITL is computed from it)."""
        async with self._fake(output_tokens=9, tokens_per_chunk=3, ttft_ms=5, itl_ms=5) as fake:
            provider = self.make_provider(fake.base_url)
            texts = [chunk.text async for chunk in provider.stream(self._request(stream=True))
                     if chunk.text]  # fmt: skip
        async with self._fake(output_tokens=9, tokens_per_chunk=3) as fake:
            response = await self._collect(self.make_provider(fake.base_url))
        assert len(texts) == 3, f"expected 3 text chunks of 3 tokens, got {texts!r}"
        assert response.usage is not None, "a stream must end with the vendor's usage"
        assert response.usage.output_tokens == 9, response.usage

    async def wrong_key_is_an_authentication_error(self) -> None:
        """A rejected key: an authentication error, which the executor never retries."""
        async with FakeVendorServer(self.vendor, api_key="a-key-the-provider-lacks") as fake:
            error = await self._failure(self.make_provider(fake.base_url), stream=False)
        assert isinstance(error, AuthenticationError), repr(error)
        assert not error.retryable

    async def rate_limit_carries_the_retry_hint(self) -> None:
        """A 429 with ``Retry-After: 2``: retryable, waiting what the vendor said."""
        async with self._fake(Fault.rate_limited({"retry-after": "2"})) as fake:
            error = await self._failure(self.make_provider(fake.base_url), stream=False)
        assert isinstance(error, RateLimitedError), repr(error)
        assert error.retryable
        assert error.retry_after_s == 2.0, error.retry_after_s

    async def server_errors_are_transient(self) -> None:
        """500 and 503 answers, and a 500 mid-stream: transient, so retried."""
        async with self._fake(Fault.http_error(500), Fault.http_error(503),
                              Fault.stream_error(after_chunks=1)) as fake:
            provider = self.make_provider(fake.base_url)
            errors = [await self._failure(provider, stream=False),
                      await self._failure(provider, stream=False),
                      await self._failure(provider, stream=True)]
        for error in errors:
            assert error.retryable, repr(error)

    async def malformed_answer_is_a_clear_error(self) -> None:
        """A body or event that is not JSON: a malformed-response error, never a hang."""
        async with self._fake(Fault.malformed(), Fault.malformed(after_chunks=1)) as fake:
            provider = self.make_provider(fake.base_url)
            async with asyncio.timeout(10):
                errors = [await self._failure(provider, stream=False),
                          await self._failure(provider, stream=True)]
        for error in errors:
            assert isinstance(error, MalformedResponseError), repr(error)

    async def truncated_stream_is_not_an_answer(self) -> None:
        """A stream that ends without the vendor's closing events: a transient error,
        never a short answer counted as complete."""
        async with self._fake(Fault.truncated(after_chunks=2), output_tokens=6) as fake:
            error = await self._failure(self.make_provider(fake.base_url), stream=True)
        assert isinstance(error, TransientProviderError), repr(error)

    async def connection_cut_is_transient(self) -> None:
        """A connection closed half-way through a body, or before any answer: transient."""
        async with self._fake(Fault.truncated(), Fault.disconnect()) as fake:
            provider = self.make_provider(fake.base_url)
            for _ in range(2):
                error = await self._failure(provider, stream=False)
                assert isinstance(error, TransientProviderError), repr(error)

    async def cancellation_hangs_up_promptly(self) -> None:
        """Cancelling a stream (a test timeout, a cancelled run) closes its connection: the
        vendor sees the client leave at its next write."""
        async with self._fake(output_tokens=50, itl_ms=50) as fake:
            provider = self.make_provider(fake.base_url)
            first = asyncio.Event()

            async def consume() -> None:
                async for chunk in provider.stream(self._request(stream=True)):
                    if chunk.text:
                        first.set()

            task = asyncio.create_task(consume())
            await first.wait()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            async with asyncio.timeout(2):  # the fake notices at its next write (50 ms)
                while fake.in_flight:  # noqa: ASYNC110 - the fake has no hang-up event
                    await asyncio.sleep(0.01)
        entry = fake.trace[0]
        assert entry.status == CLIENT_CLOSED_REQUEST, entry
        assert entry.last_byte is None

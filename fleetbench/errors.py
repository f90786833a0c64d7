"""The one exception tree of fleetbench.

::

    FleetbenchError
    ├── InputError                 bad user input; carries every Problem found
    │   ├── ManifestError          the manifest (structure or meaning)
    │   └── DatasetError           a dataset file or a template in it
    ├── PluginError                a plugin failed to load, is incompatible or misbehaves
    └── ProviderError              a provider call failed; ``retryable`` tells the executor
        ├── RateLimitedError       429 / quota; retryable, may carry ``retry_after_s``
        ├── TransientProviderError 5xx, overloaded, network, truncated stream; retryable
        ├── ProviderTimeoutError   the vendor did not answer in time; retryable
        ├── AuthenticationError    bad or missing key; never retried
        ├── BadRequestError        the vendor rejected the request; never retried
        │   └── ContextLengthError the prompt does not fit the model
        └── MalformedResponseError the vendor answered something we cannot read; not retried

Providers raise these (or let ``Provider.classify_error`` map their own exceptions to
them); the executor owns what happens next.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "ContextLengthError",
    "DatasetError",
    "FleetbenchError",
    "InputError",
    "MalformedResponseError",
    "ManifestError",
    "PluginError",
    "Problem",
    "ProviderError",
    "ProviderTimeoutError",
    "RateLimitedError",
    "TransientProviderError",
]


class FleetbenchError(Exception):
    """Base of every error fleetbench raises on purpose."""


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One problem in user input: where it is and what is wrong.

    ``location`` is a field path such as ``repositories[2].scenarios[0]``, optionally
    prefixed by a file (``datasets/coding.yaml: test_cases[3].prompt``).
    """

    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class InputError(FleetbenchError):
    """Bad user input. Holds *all* problems found, not just the first."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or "invalid input")

    def __reduce__(self) -> tuple[type[InputError], tuple[tuple[Problem, ...]]]:
        # Rebuilt from its problems (not its message) when it crosses a process boundary.
        return (type(self), (self.problems,))


class ManifestError(InputError):
    """The manifest is invalid (unknown keys, bad values, unresolvable references)."""


class DatasetError(InputError):
    """A dataset cannot be loaded, is invalid, or one of its templates cannot be rendered."""


class PluginError(FleetbenchError):
    """A plugin could not be loaded, declares an incompatible API version, or misbehaves."""


class ProviderError(FleetbenchError):
    """A provider call failed.

    :param message: what went wrong, never containing a secret.
    :param status_code: the vendor's HTTP status, when there was one.
    :param retry_after_s: the vendor's hint of how long to wait before retrying.
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retry_after_s = retry_after_s

    @property
    def kind(self) -> str:
        """A short stable name of the error class, e.g. ``rate_limited``."""
        return _KINDS.get(type(self), "provider_error")


class RateLimitedError(ProviderError):
    """The vendor throttled us (HTTP 429 or a quota error)."""

    retryable = True


class TransientProviderError(ProviderError):
    """A failure worth retrying: 5xx, overloaded, connection reset, truncated stream."""

    retryable = True


class ProviderTimeoutError(ProviderError):
    """The vendor did not answer within the provider's timeout."""

    retryable = True


class AuthenticationError(ProviderError):
    """The API key is missing, invalid or lacks permission. Never retried."""


class BadRequestError(ProviderError):
    """The vendor rejected the request as invalid. Never retried."""


class ContextLengthError(BadRequestError):
    """The prompt (plus the output budget) exceeds the model's context window."""


class MalformedResponseError(ProviderError):
    """The vendor's answer could not be parsed. Not retried: it would likely repeat."""


_KINDS: dict[type[ProviderError], str] = {
    ProviderError: "provider_error",
    RateLimitedError: "rate_limited",
    TransientProviderError: "transient",
    ProviderTimeoutError: "timeout",
    AuthenticationError: "authentication",
    BadRequestError: "bad_request",
    ContextLengthError: "context_length",
    MalformedResponseError: "malformed_response",
}


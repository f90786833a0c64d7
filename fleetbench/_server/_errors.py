"""Errors the server's inner layers raise on purpose. They know nothing of gRPC: the
servicer maps each to a status code (and bad input, ``InputError``, to a BadRequest)."""

from __future__ import annotations

from fleetbench.errors import FleetbenchError


class ServiceError(FleetbenchError):
    """A request the server refuses; the message is safe to show the caller."""


class RunNotFoundError(ServiceError):
    """No run (or no artifact of a run) has this name. → NOT_FOUND"""


class OutsideDataRootsError(ServiceError):
    """A manifest names a path outside the server's data roots. → PERMISSION_DENIED"""


class OverLimitError(ServiceError):
    """The start would exceed a server-wide limit. → RESOURCE_EXHAUSTED"""


class ShuttingDownError(ServiceError):
    """The server is stopping and accepts no new work. → UNAVAILABLE"""


class BadRequestError(ServiceError):
    """A request field is invalid (not the manifest: that is ``InputError``).
    → INVALID_ARGUMENT"""


class OutOfRangeError(ServiceError):
    """An offset beyond the end of an artifact. → OUT_OF_RANGE"""

"""Connecting this process (the driver) to a Ray cluster: once, on first use."""

from __future__ import annotations

import logging

import ray

from fleetbench_ray import RayExecutorError

__all__ = ["cluster_cpus", "connect"]

_connected_to: str | None = None
"""The ``ray_address`` this module connected with (``""``: Ray's default)."""


def connect(address: str | None) -> None:
    """Connect to the cluster ``address`` names (see ``global_settings.ray_address``),
    unless this process is connected already. Blocking: call it off the event loop.

    A process talks to one cluster: when a program (or a test) called ``ray.init``
    itself, that connection is used; a later run naming another address than the one
    this module connected to is refused.

    :raises RayExecutorError: the cluster cannot be reached, or another one is in use.
    """
    global _connected_to
    wanted = address or ""
    if ray.is_initialized():
        if _connected_to is not None and address is not None and wanted != _connected_to:
            raise RayExecutorError(
                f"this process is connected to the Ray cluster {_connected_to or '(default)'!r}"
                f"; a run cannot use {address!r} as well (one cluster per process)")
        return
    # Off the main thread Ray leaves the process's SIGTERM handler alone (the CLI's and
    # the server's own handlers must stay) and says so, here and, through Ray Client, from
    # the server side; that is intended, not news.
    for name in ("ray._private.worker", "ray.util.client.logsclient"):
        logging.getLogger(name).addFilter(_not_the_sigterm_notice)
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayExecutorError(f"cannot connect to the Ray cluster "
                               f"{address or '(default)'!r}: {exc}") from exc
    _connected_to = wanted


def _not_the_sigterm_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("SIGTERM handler is not set")


def cluster_cpus() -> int:
    """The CPUs of the cluster (at least 1): the default number of actors."""
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return max(1, int(resources.get("CPU", 1)))

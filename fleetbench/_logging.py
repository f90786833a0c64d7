"""structlog, configured once per process: to stderr, as console lines on a terminal
and JSON lines elsewhere (servers, CI). Never pass a secret to a log call: providers
get API keys as :class:`~fleetbench.plugin.Secret`, whose repr is masked."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(level: int = logging.WARNING, *, json_lines: bool | None = None) -> None:
    """Send structlog events at ``level`` and above to stderr."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json_lines
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )

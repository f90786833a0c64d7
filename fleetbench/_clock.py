"""Wall-clock timestamps (UTC, ISO-8601 with a ``Z``). Durations never use these: they
come from ``time.perf_counter()``."""

from __future__ import annotations

import time
from datetime import UTC, datetime

_formatted = (-1, "")
"""The last whole second formatted and its text (one tuple: threads swap it whole)."""


def utc_now() -> str:
    """Now, e.g. ``2026-11-27T05:12:03.123456Z``.

    Called twice per test, so the date and time of day are formatted once per second and
    only the microseconds each time (truncated, as ``datetime.now`` does).
    """
    global _formatted
    second, micros = divmod(time.time_ns() // 1000, 1_000_000)
    formatted = _formatted
    if formatted[0] != second:
        formatted = _formatted = (second, format_second(second))
    return f"{formatted[1]}.{micros:06d}Z"


def format_second(second: int) -> str:
    """``2026-11-27T05:12:03``: a Unix time in whole seconds, in UTC."""
    return datetime.fromtimestamp(second, UTC).isoformat().removesuffix("+00:00")

"""Wall-clock timestamps (UTC, ISO-8601 with a ``Z``). Durations never use these: they
come from ``time.perf_counter()``."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> str:
    """Now, e.g. ``2026-11-27T05:12:03.123456Z``."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")

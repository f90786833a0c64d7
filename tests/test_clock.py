"""Wall-clock timestamps: the cached per-second prefix gives exactly datetime's text."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime

from fleetbench._clock import format_second, utc_now


def test_timestamps_read_as_datetime_writes_them() -> None:
    rng = random.Random(7)
    for micros_since_epoch in [0, 1, 999_999, 10**6, *(rng.randrange(0, 4_102_444_800 * 10**6)
                                                      for _ in range(2000))]:
        second, micros = divmod(micros_since_epoch, 10**6)
        expected = datetime.fromtimestamp(second, UTC).replace(microsecond=micros)
        assert f"{format_second(second)}.{micros:06d}Z" == \
            expected.isoformat(timespec="microseconds").replace("+00:00", "Z")


def test_utc_now_is_now_in_utc_with_microseconds() -> None:
    before = datetime.now(UTC)
    stamps = [utc_now() for _ in range(1000)]
    after = datetime.now(UTC)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", s) for s in stamps)
    assert stamps == sorted(stamps)
    parsed = [datetime.fromisoformat(s) for s in (stamps[0], stamps[-1])]
    assert before <= parsed[0] <= parsed[1] <= after

"""Garbage-collector settings while runs execute.

Each request in flight holds a few dozen container objects (coroutines, headers, futures,
timer handles) for as long as the vendor takes to answer. With 64 requests in flight that
is thousands of young objects, so CPython's default youngest-generation threshold (700
allocations) is crossed every dozen requests; each collection promotes the objects of the
requests in flight, whose promotions soon trigger collections of the older generations
too. Measured with ``bench/bench_provider_http.py`` (64 in flight, ~1,000 requests/s): 180
young, 15 middle and 2 full collections per 3,000 requests, ~40 µs of CPU per request,
and full collections of 30-70 ms in the event loop, during which every request in flight
is timed as if the vendor were slow.

While at least one run executes in the process, the youngest generation is therefore
collected every :data:`RUN_GEN0_THRESHOLD` allocations instead (a threshold already higher
is kept); the previous thresholds come back when the last run ends, unless something else
changed them meanwhile. Garbage cycles are still collected, in bigger and rarer batches.

The objects that exist when the first run starts (modules, plugins, the manifest, the
plan: a few hundred thousand in a typical process) are moreover frozen (``gc.freeze()``)
until the last run ends: the run's full collections then scan only what the run created
(~25 ms -> ~1 ms each, measured with the same benchmark). Garbage among the frozen objects
waits until the end of the runs; nothing is frozen or unfrozen if something else in the
process froze objects already.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["RUN_GEN0_THRESHOLD", "gc_tuned_for_runs"]

RUN_GEN0_THRESHOLD = 20_000
"""Allocations between two collections of the youngest generation while runs execute:
well above what 64 requests in flight hold (~6,000), a few MB of garbage at most."""

_lock = threading.Lock()
_runs = 0
_restore: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None
"""While runs execute: (the thresholds before the first run, the ones it set)."""
_froze = False
"""While runs execute: whether the first one froze the objects that existed before it."""


@contextmanager
def gc_tuned_for_runs() -> Iterator[None]:
    """Raise the youngest generation's threshold and freeze what exists while the block
    runs (see the module docstring). Blocks may nest and overlap (several runs in one
    server); automatic collection left disabled (threshold 0) stays disabled."""
    global _runs, _restore, _froze
    with _lock:
        if _runs == 0:
            if gc.get_freeze_count() == 0:
                gc.freeze()
                _froze = True
            before = gc.get_threshold()
            if before[0] and before[0] < RUN_GEN0_THRESHOLD:
                gc.set_threshold(RUN_GEN0_THRESHOLD, *before[1:])
                _restore = (before, gc.get_threshold())
        _runs += 1
    try:
        yield
    finally:
        with _lock:
            _runs -= 1
            if _runs == 0 and _froze:
                _froze = False
                gc.unfreeze()
            if _runs == 0 and _restore is not None:
                before, ours = _restore
                _restore = None
                if gc.get_threshold() == ours:  # else someone else has set them since
                    gc.set_threshold(*before)

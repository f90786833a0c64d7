"""Incremental aggregates of one run: cheap live snapshots and exact final summaries.

The aggregator is a lossless bus subscriber that may see millions of results, so it
keeps no ``TestResult`` objects. Each result becomes one row of a few numpy columns
(status code, five timings with NaN for ``None``, token and retry counts, cost) plus
one small int: its *cell*, the interned ``(repo, scenario, provider, model, category)``
tuple. Every breakdown of DESIGN §5 (fleet, provider, repository, category, scenario,
repository × provider) is a function of the cell, so a row's group in any dimension is
one table lookup, and per-dimension work is vectorized over rows.

- ``finalize`` recomputes everything from the columns: integer aggregates per cell
  (then summed per group), float sums per group in row order, and exact percentiles
  (numpy's default linear interpolation) from one sort per metric plus a stable radix
  sort of small group ids per dimension.
- ``snapshot`` folds only the rows added since the previous snapshot into running
  per-cell totals and per-group DDSketches (``ddsketch``, 1 % relative accuracy), so it
  stays cheap however long the run is. Sketch bucket keys are computed for a whole
  batch with numpy using the library's mapping, and each distinct (group, bucket) pair
  is added to the library's sketch once, with its count as the weight.

Not thread-safe: one event-loop task feeds it, as the bus does.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from operator import attrgetter
from types import MappingProxyType
from typing import Any, Final, TypeAlias

import numpy as np
import numpy.typing as npt
from ddsketch import DDSketch, LogarithmicMapping

from fleetbench.records import Distribution, GroupStats, Status, Summary, TestResult

__all__ = ["Aggregator"]

_Floats: TypeAlias = npt.NDArray[np.float64]
_Ints: TypeAlias = npt.NDArray[np.int64]
_CellKey: TypeAlias = tuple[str, str, str, str, str | None]

RELATIVE_ACCURACY: Final = 0.01
"""DDSketch relative accuracy of live percentiles (DESIGN §5)."""

_QUANTILES: Final = (0.5, 0.9, 0.95, 0.99)
_STATUSES: Final = tuple(Status)
_STATUS_CODE: Final = {status: code for code, status in enumerate(_STATUSES)}
_METRICS: Final = ("latency_ms", "ttft_ms", "itl_ms", "duration_ms", "queue_ms")
_LATENCY: Final = 0
# Integer columns of a chunk, in this order.
_RETRIES, _INPUT, _OUTPUT, _CACHED = range(4)
# Integer aggregates of a group, in this order (the chunk's four, then derived ones).
_INT_TOTALS: Final = ("retries", "input_tokens", "output_tokens", "cached_input_tokens",
                      "unpriced_tests", "timed_output_tokens")
_DIMENSIONS: Final = ("fleet", "provider", "repository", "category", "scenario",
                      "repository_provider")
_FLEET, _PROVIDER, _REPOSITORY, _CATEGORY, _SCENARIO, _REPO_PROVIDER = range(6)
_BATCH: Final = 2048  # rows converted at a time: large enough to amortize numpy calls,
# small enough that the batch's objects stay in cache while each column is read
_CELL_KEY = attrgetter("repo_id", "scenario", "provider", "model", "category")
_NAN: Final = math.nan


# ---------------------------------------------------------------------------- columns


@dataclass(frozen=True, slots=True)
class _Chunk:
    """Columns of consecutive results, one row per result."""

    cell: npt.NDArray[np.int32]
    status: npt.NDArray[np.int8]  # index into _STATUSES
    metrics: _Floats  # (len(_METRICS), rows); NaN where the value is None
    ints: _Ints  # (4, rows): retries, input, output, cached tokens (0 without usage)
    has_usage: npt.NDArray[np.bool_]
    cost: _Floats  # NaN where None

    def __len__(self) -> int:
        return len(self.status)

    @staticmethod
    def concat(chunks: Sequence[_Chunk]) -> _Chunk:
        """One chunk holding the rows of ``chunks`` in order."""
        if len(chunks) == 1:
            return chunks[0]
        return _Chunk(
            cell=np.concatenate([c.cell for c in chunks]),
            status=np.concatenate([c.status for c in chunks]),
            metrics=np.concatenate([c.metrics for c in chunks], axis=1),
            ints=np.concatenate([c.ints for c in chunks], axis=1),
            has_usage=np.concatenate([c.has_usage for c in chunks]),
            cost=np.concatenate([c.cost for c in chunks]),
        )


def _empty_chunk() -> _Chunk:
    return _Chunk(
        cell=np.zeros(0, np.int32), status=np.zeros(0, np.int8),
        metrics=np.zeros((len(_METRICS), 0)), ints=np.zeros((4, 0), np.int64),
        has_usage=np.zeros(0, np.bool_), cost=np.zeros(0),
    )


def _extract(batch: Sequence[TestResult], groups: _Groups) -> _Chunk:
    """Convert a batch of results to columns: one list comprehension per field."""
    n = len(batch)
    metrics = np.empty((len(_METRICS), n))
    metrics[0] = np.fromiter(
        [_NAN if (v := r.latency_ms) is None else v for r in batch], np.float64, n)
    metrics[1] = np.fromiter(
        [_NAN if (v := r.ttft_ms) is None else v for r in batch], np.float64, n)
    metrics[2] = np.fromiter(
        [_NAN if (v := r.itl_ms) is None else v for r in batch], np.float64, n)
    metrics[3] = np.fromiter([r.total_ms for r in batch], np.float64, n)
    metrics[4] = np.fromiter([r.queue_ms for r in batch], np.float64, n)
    usages = [r.usage for r in batch]
    has_usage = np.fromiter([u is not None for u in usages], np.bool_, n)
    ints = np.zeros((4, n), np.int64)
    ints[_RETRIES] = np.fromiter([r.retries for r in batch], np.int64, n)
    used = [u for u in usages if u is not None]
    if used:
        ints[_INPUT, has_usage] = np.fromiter([u.input_tokens for u in used], np.int64)
        ints[_OUTPUT, has_usage] = np.fromiter([u.output_tokens for u in used], np.int64)
        ints[_CACHED, has_usage] = np.fromiter(
            [u.cached_input_tokens for u in used], np.int64)
    return _Chunk(
        cell=groups.intern(list(map(_CELL_KEY, [r.item for r in batch]))),
        status=np.fromiter(map(_STATUS_CODE.__getitem__, [r.status for r in batch]),
                           np.int8, n),
        metrics=metrics,
        ints=ints,
        has_usage=has_usage,
        cost=np.fromiter([_NAN if (v := r.cost_usd) is None else v for r in batch],
                         np.float64, n),
    )


class _Columns:
    """All rows of the run as a list of chunks, compacted into one chunk on demand."""

    def __init__(self) -> None:
        self._chunks: list[_Chunk] = []
        self._starts: list[int] = []  # first row of each chunk
        self.rows = 0

    def append(self, chunk: _Chunk) -> None:
        self._chunks.append(chunk)
        self._starts.append(self.rows)
        self.rows += len(chunk)

    def since(self, row: int) -> _Chunk:
        """Rows ``row`` and later, as one chunk (all rows are compacted in place)."""
        if row >= self.rows:
            return _empty_chunk()
        if row == 0:
            whole = _Chunk.concat(self._chunks)
            self._chunks, self._starts = [whole], [0]
            return whole
        first = max(i for i, start in enumerate(self._starts) if start <= row)
        tail = _Chunk.concat(self._chunks[first:])
        skip = row - self._starts[first]
        if skip == 0:
            return tail
        return _Chunk(tail.cell[skip:], tail.status[skip:], tail.metrics[:, skip:],
                      tail.ints[:, skip:], tail.has_usage[skip:], tail.cost[skip:])


# ----------------------------------------------------------------------------- groups


def _group_names(key: _CellKey) -> tuple[Hashable, ...]:
    """The group a cell belongs to in each dimension, in _DIMENSIONS order."""
    repo, scenario, provider, model, category = key
    provider_key = f"{provider}:{model}"  # WorkItem.provider_key
    return ("fleet", provider_key, repo, category, scenario, (repo, provider_key))


class _Groups:
    """Interns cells and maps every cell to its group id in each dimension."""

    def __init__(self) -> None:
        self._cells: dict[_CellKey, int] = {}
        self._index: list[dict[Hashable, int]] = [{} for _ in _DIMENSIONS]
        self._names: list[list[Hashable]] = [[] for _ in _DIMENSIONS]
        self._cell_group: list[list[int]] = [[] for _ in _DIMENSIONS]
        self._tables: list[npt.NDArray[np.intp]] = []

    @property
    def cells(self) -> int:
        return len(self._cells)

    def size(self, dim: int) -> int:
        return len(self._names[dim])

    def names(self, dim: int) -> list[Hashable]:
        return self._names[dim]

    def table(self, dim: int) -> npt.NDArray[np.intp]:
        """Group id of each cell in dimension ``dim``."""
        if len(self._tables) != len(_DIMENSIONS) or len(self._tables[0]) != self.cells:
            self._tables = [np.asarray(groups, np.intp) for groups in self._cell_group]
        return self._tables[dim]

    def intern(self, keys: list[_CellKey]) -> npt.NDArray[np.int32]:
        """Cell ids of ``keys``, registering cells seen for the first time."""
        ids = list(map(self._cells.get, keys))
        if None in ids:
            for key in keys:
                if key not in self._cells:
                    self._register(key)
            ids = list(map(self._cells.get, keys))
        return np.fromiter(ids, np.int32, len(ids))

    def _register(self, key: _CellKey) -> None:
        self._cells[key] = len(self._cells)
        for dim, name in enumerate(_group_names(key)):
            index = self._index[dim]
            if name not in index:
                index[name] = len(index)
                self._names[dim].append(name)
            self._cell_group[dim].append(index[name])


# ----------------------------------------------------------------------------- totals


@dataclass(slots=True)
class _CellTotals:
    """Exactly mergeable aggregates per cell: counts, integer sums, extrema."""

    status: _Ints  # (cells, len(_STATUSES))
    ints: _Ints  # (cells, len(_INT_TOTALS))
    n: _Ints  # (cells, len(_METRICS)): rows where the metric is not None
    min: _Floats  # (cells, len(_METRICS)); +inf when n is 0
    max: _Floats  # (cells, len(_METRICS)); -inf when n is 0

    @staticmethod
    def zeros(cells: int) -> _CellTotals:
        m = len(_METRICS)
        return _CellTotals(
            status=np.zeros((cells, len(_STATUSES)), np.int64),
            ints=np.zeros((cells, len(_INT_TOTALS)), np.int64),
            n=np.zeros((cells, m), np.int64),
            min=np.full((cells, m), np.inf), max=np.full((cells, m), -np.inf),
        )

    @staticmethod
    def of(chunk: _Chunk, cells: int) -> _CellTotals:
        """Aggregates of ``chunk``'s rows per cell id (``cells`` = number of cells)."""
        out = _CellTotals.zeros(cells)
        cell = chunk.cell
        out.status[:] = _count(cell.astype(np.int64) * len(_STATUSES) + chunk.status,
                               cells * len(_STATUSES)).reshape(cells, len(_STATUSES))
        for col in range(4):
            out.ints[:, col] = _int_sum(cell, chunk.ints[col], cells)
        out.ints[:, 4] = _count(cell[chunk.has_usage & np.isnan(chunk.cost)], cells)
        timed = ~np.isnan(chunk.metrics[_LATENCY])
        out.ints[:, 5] = _int_sum(cell[timed], chunk.ints[_OUTPUT][timed], cells)
        for m in range(len(_METRICS)):
            values = chunk.metrics[m]
            valid = ~np.isnan(values)
            out.n[:, m] = _count(cell[valid], cells)
            np.fmin.at(out.min[:, m], cell, values)
            np.fmax.at(out.max[:, m], cell, values)
        return out

    def merged(self, other: _CellTotals) -> _CellTotals:
        """Totals of both (``other`` may know more cells)."""
        mine = self.padded(len(other.status))
        return _CellTotals(
            status=mine.status + other.status, ints=mine.ints + other.ints,
            n=mine.n + other.n, min=np.fmin(mine.min, other.min),
            max=np.fmax(mine.max, other.max),
        )

    def padded(self, cells: int) -> _CellTotals:
        extra = cells - len(self.status)
        if extra == 0:
            return self
        pad = _CellTotals.zeros(extra)
        return _CellTotals(
            status=np.vstack([self.status, pad.status]), ints=np.vstack([self.ints, pad.ints]),
            n=np.vstack([self.n, pad.n]), min=np.vstack([self.min, pad.min]),
            max=np.vstack([self.max, pad.max]),
        )

    def by_group(self, table: npt.NDArray[np.intp], groups: int) -> _CellTotals:
        """Reduce cells to the groups of one dimension (``table``: cell → group)."""
        out = _CellTotals.zeros(groups)
        np.add.at(out.status, table, self.status)
        np.add.at(out.ints, table, self.ints)
        np.add.at(out.n, table, self.n)
        np.fmin.at(out.min, table, self.min)
        np.fmax.at(out.max, table, self.max)
        return out


@dataclass(slots=True)
class _FloatSums:
    """Float sums per group of one dimension: cost and each metric.

    Summed per group over rows in row order (``np.bincount`` adds sequentially), so a
    final summary equals a plain left-to-right sum of the group's values.
    """

    cost: _Floats  # (groups,)
    metrics: _Floats  # (groups, len(_METRICS))

    @staticmethod
    def zeros(groups: int) -> _FloatSums:
        return _FloatSums(np.zeros(groups), np.zeros((groups, len(_METRICS))))

    @staticmethod
    def of(chunk: _Chunk, zeroed: _Floats, zero_cost: _Floats,
           gid: npt.NDArray[np.intp], groups: int) -> _FloatSums:
        """Sums of ``chunk`` (NaN already replaced by 0 in ``zeroed``/``zero_cost``)."""
        metrics = np.empty((groups, len(_METRICS)))
        for m in range(len(_METRICS)):
            metrics[:, m] = np.bincount(gid, zeroed[m], groups)
        return _FloatSums(np.asarray(np.bincount(gid, zero_cost, groups), np.float64), metrics)

    def merged(self, other: _FloatSums) -> _FloatSums:
        extra = len(other.cost) - len(self.cost)
        return _FloatSums(np.pad(self.cost, (0, extra)) + other.cost,
                          np.pad(self.metrics, ((0, extra), (0, 0))) + other.metrics)


def _count(ids: npt.NDArray[Any], size: int) -> _Ints:
    return np.bincount(ids, minlength=size).astype(np.int64)


def _int_sum(ids: npt.NDArray[Any], values: _Ints, size: int) -> _Ints:
    """Per-id sums of integers (exact below 2**53, far above any token count)."""
    return np.rint(np.bincount(ids, values, size)).astype(np.int64)


def _float_sums(chunk: _Chunk, groups: _Groups) -> list[_FloatSums]:
    """``_FloatSums`` of ``chunk`` for every dimension."""
    zeroed = np.nan_to_num(chunk.metrics, nan=0.0)
    zero_cost = np.nan_to_num(chunk.cost, nan=0.0)
    return [
        _FloatSums.of(chunk, zeroed, zero_cost, groups.table(dim)[chunk.cell],
                      groups.size(dim))
        for dim in range(len(_DIMENSIONS))
    ]


# ------------------------------------------------------------------ exact percentiles


def _lerp(a: _Floats, b: _Floats, t: _Floats) -> _Floats:
    """numpy's own linear interpolation (``np.percentile`` method "linear"), which
    switches formula at t = 0.5 so that the result is exact at both ends."""
    diff = b - a
    return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def _linear_percentiles(ordered: _Floats, starts: _Ints, counts: _Ints) -> _Floats:
    """Percentiles of each group of ``ordered`` (sorted within groups laid end to end).

    Returns (groups, len(_QUANTILES)), NaN for empty groups; bit-for-bit what
    ``np.percentile(group, 100 * q)`` gives.
    """
    result = np.full((len(counts), len(_QUANTILES)), np.nan)
    filled = counts > 0
    if not filled.any():
        return result
    last = (counts[filled] - 1)[:, None]
    virtual = last.astype(np.float64) * np.asarray(_QUANTILES)[None, :]
    below = np.floor(virtual)
    low = below.astype(np.int64)
    high = np.minimum(low + 1, last)
    base = starts[filled][:, None]
    result[filled] = _lerp(ordered[base + low], ordered[base + high], virtual - below)
    return result


def _radix_ids(ids: npt.NDArray[np.intp], groups: int) -> npt.NDArray[Any]:
    """``ids`` in the narrowest dtype, so that numpy's stable sort is a radix sort."""
    if groups <= 1 << 8:
        return ids.astype(np.uint8)
    if groups <= 1 << 16:
        return ids.astype(np.uint16)
    return ids


def _exact_percentiles(chunk: _Chunk, groups: _Groups) -> list[_Floats]:
    """Exact percentiles of every metric for every group of every dimension.

    Each metric is sorted once; per dimension, a stable (radix) argsort of the sorted
    rows' group ids lays groups end to end while keeping values sorted inside them.
    Returns one (groups, len(_METRICS), len(_QUANTILES)) array per dimension.
    """
    out = [np.full((groups.size(d), len(_METRICS), len(_QUANTILES)), np.nan)
           for d in range(len(_DIMENSIONS))]
    for m in range(len(_METRICS)):
        values = chunk.metrics[m]
        order = np.argsort(values)[: np.count_nonzero(~np.isnan(values))]  # NaN sort last
        ordered = values[order]
        cells = chunk.cell[order]
        for dim in range(len(_DIMENSIONS)):
            size = groups.size(dim)
            gid = groups.table(dim)[cells]
            if size > 1:
                ordered_dim = ordered[np.argsort(_radix_ids(gid, size), kind="stable")]
            else:
                ordered_dim = ordered
            counts = _count(gid, size)
            starts = np.cumsum(counts) - counts
            out[dim][:, m, :] = _linear_percentiles(ordered_dim, starts, counts)
    return out


# ------------------------------------------------------------------ live percentiles


_SIGN_SHIFT: Final = 20  # bucket code = (sign << 20) | (key + 2**19); |key| < 36,000 at 1 %
_KEY_BIAS: Final = 1 << 19


class _Sketches:
    """One ``ddsketch.DDSketch`` per (dimension, group, metric), fed in batches.

    Keys are computed for a whole batch with numpy from the library's mapping; each
    distinct (group, bucket) pair is added once, with the bucket's representative value
    (``mapping.value(key)``, which maps back to the same key) and its count as weight.
    Every value lies within the relative accuracy of its bucket's representative, so the
    sketch keeps the library's guarantee.
    """

    def __init__(self, relative_accuracy: float = RELATIVE_ACCURACY) -> None:
        self.relative_accuracy = relative_accuracy
        self._mapping = LogarithmicMapping(relative_accuracy)  # what DDSketch uses
        self._per_log2 = math.log(2.0) / math.log(self._mapping.gamma)
        self._sketches: list[list[list[DDSketch]]] = [[] for _ in _DIMENSIONS]
        self._representative: dict[int, float] = {}

    def sketch(self, dim: int, group: int, metric: int) -> DDSketch:
        return self._sketches[dim][group][metric]

    def fold(self, chunk: _Chunk, groups: _Groups) -> list[set[int]]:
        """Add ``chunk``'s values; return the groups touched, per dimension."""
        for dim in range(len(_DIMENSIONS)):
            while len(self._sketches[dim]) < groups.size(dim):
                self._sketches[dim].append(
                    [DDSketch(self.relative_accuracy) for _ in _METRICS])
        touched: list[set[int]] = [set() for _ in _DIMENSIONS]
        for m in range(len(_METRICS)):
            values = chunk.metrics[m]
            valid = ~np.isnan(values)
            cell_codes, cell_counts = self._cell_buckets(chunk.cell[valid], values[valid])
            for dim in range(len(_DIMENSIONS)):
                touched[dim].update(
                    self._add(dim, m, groups.table(dim), cell_codes, cell_counts))
        return touched

    def _cell_buckets(self, cells: npt.NDArray[np.int32],
                      values: _Floats) -> tuple[_Ints, _Ints]:
        """Distinct (cell, bucket) codes among the values and how many fall in each."""
        magnitude = np.abs(values)
        nonzero = magnitude > self._mapping.min_possible
        keys = np.zeros(len(values), np.int64)
        keys[nonzero] = np.ceil(np.log2(magnitude[nonzero]) * self._per_log2)
        sign = np.where(nonzero, np.where(values > 0, 1, 2), 0)
        codes = (sign << _SIGN_SHIFT) | (keys + _KEY_BIAS)
        combined = (cells.astype(np.int64) << (_SIGN_SHIFT + 2)) | codes
        unique, counts = np.unique(combined, return_counts=True)
        return unique, counts.astype(np.int64)

    def _add(self, dim: int, metric: int, table: npt.NDArray[np.intp],
             cell_codes: _Ints, cell_counts: _Ints) -> set[int]:
        """Merge cell buckets into group buckets and add them to the group sketches."""
        mask = (1 << (_SIGN_SHIFT + 2)) - 1
        gid = table[cell_codes >> (_SIGN_SHIFT + 2)].astype(np.int64)
        combined = (gid << (_SIGN_SHIFT + 2)) | (cell_codes & mask)
        unique, inverse = np.unique(combined, return_inverse=True)
        weights = np.bincount(inverse, cell_counts, len(unique))
        sketches = self._sketches[dim]
        group_ids = (unique >> (_SIGN_SHIFT + 2)).tolist()
        for group, code, weight in zip(group_ids, (unique & mask).tolist(),
                                       weights.tolist(), strict=True):
            sketches[group][metric].add(self._value(code), weight)
        return set(group_ids)

    def _value(self, code: int) -> float:
        """The representative value of a bucket code (0, or ± the mapping's value)."""
        value = self._representative.get(code)
        if value is None:
            sign, key = code >> _SIGN_SHIFT, (code & (_KEY_BIAS * 2 - 1)) - _KEY_BIAS
            value = 0.0 if sign == 0 else self._mapping.value(key)
            value = -value if sign == 2 else value
            self._representative[code] = value
        return value


def _element(sketch: DDSketch, index: int, count: int) -> float:
    """The sketch's estimate of the ``index``-th smallest value (0-based).

    The library answers quantile q with the value at rank q·(count−1) rounded down;
    asking for rank index + 0.5 lands safely on ``index`` despite float rounding.
    """
    q = 1.0 if index >= count - 1 else (index + 0.5) / (count - 1)
    value = sketch.get_quantile_value(q)
    assert value is not None  # the sketch is not empty
    return float(value)


def _sketch_percentiles(sketch: DDSketch) -> list[float]:
    """Percentiles like ``np.percentile`` (linear), from the sketch's estimates of the
    two closest ranks, so each is within the relative accuracy of the exact value."""
    count = round(sketch.count)
    if count == 0:
        return [_NAN] * len(_QUANTILES)
    cache: dict[int, float] = {}

    def element(index: int) -> float:
        if index not in cache:
            cache[index] = _element(sketch, index, count)
        return cache[index]

    result = []
    for q in _QUANTILES:
        virtual = (count - 1) * q
        low = math.floor(virtual)
        t = virtual - low
        a = element(low)
        if t == 0:
            result.append(a)
            continue
        b = element(min(low + 1, count - 1))
        result.append(b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t)
    return result


# ----------------------------------------------------------------------------- output


def _optional(value: float) -> float | None:
    return None if math.isnan(value) else value


def _distribution(count: int, total: float, low: float, high: float,
                  percentiles: Sequence[float]) -> Distribution:
    if count == 0:
        return Distribution()
    p50, p90, p95, p99 = (_optional(float(p)) for p in percentiles)
    return Distribution(count=count, mean=total / count, min=low, max=high,
                        p50=p50, p90=p90, p95=p95, p99=p99)


def _group_stats(totals: _CellTotals, sums: _FloatSums, percentiles: _Floats,
                 group: int) -> GroupStats:
    """The ``GroupStats`` of one group from its dimension's arrays
    (``percentiles``: this group's (len(_METRICS), len(_QUANTILES)) array)."""
    status = dict(zip(_STATUSES, totals.status[group].tolist(), strict=True))
    ints = dict(zip(_INT_TOTALS, totals.ints[group].tolist(), strict=True))
    total = sum(status.values())
    n, mins, maxs = totals.n[group].tolist(), totals.min[group].tolist(), totals.max[group]
    metric_sums = sums.metrics[group].tolist()
    dists = [_distribution(n[m], metric_sums[m], mins[m], float(maxs[m]), percentiles[m])
             for m in range(len(_METRICS))]
    latency_s = metric_sums[_LATENCY] / 1000.0
    return GroupStats(
        total=total,
        passed=status[Status.PASSED], failed=status[Status.FAILED],
        error=status[Status.ERROR], timeout=status[Status.TIMEOUT],
        skipped=status[Status.SKIPPED], cancelled=status[Status.CANCELLED],
        success_rate=status[Status.PASSED] / total if total else 0.0,
        error_rate=(status[Status.ERROR] + status[Status.TIMEOUT]) / total if total else 0.0,
        latency_ms=dists[0], ttft_ms=dists[1], itl_ms=dists[2], duration_ms=dists[3],
        queue_ms=dists[4],
        retries=ints["retries"], input_tokens=ints["input_tokens"],
        output_tokens=ints["output_tokens"],
        cached_input_tokens=ints["cached_input_tokens"],
        cost_usd=float(sums.cost[group]), unpriced_tests=ints["unpriced_tests"],
        output_tokens_per_s=(ints["timed_output_tokens"] / latency_s
                             if n[_LATENCY] and latency_s > 0 else None),
    )


def _summary(groups: _Groups, cell_totals: _CellTotals, sums: list[_FloatSums],
             percentiles: list[_Floats], exact: bool) -> Summary:
    """Assemble the immutable ``Summary``; breakdowns are keyed in sorted order."""
    per_dim: list[MappingProxyType[Any, GroupStats]] = []
    for dim in range(len(_DIMENSIONS)):
        totals = cell_totals.by_group(groups.table(dim), groups.size(dim))
        stats = {name: _group_stats(totals, sums[dim], percentiles[dim][g], g)
                 for g, name in enumerate(groups.names(dim)) if name is not None}
        per_dim.append(MappingProxyType(dict(sorted(stats.items()))))
    return Summary(
        fleet=per_dim[_FLEET].get("fleet", GroupStats()),
        by_provider=per_dim[_PROVIDER], by_repository=per_dim[_REPOSITORY],
        by_category=per_dim[_CATEGORY], by_scenario=per_dim[_SCENARIO],
        by_repository_provider=per_dim[_REPO_PROVIDER],
        exact=exact,
        percentile_method="linear" if exact else "ddsketch",
    )


# ------------------------------------------------------------------------- aggregator


class Aggregator:
    """Incremental aggregates of one run.

    Feed it with ``add_many`` (the fast path; the bus delivers batches) or ``add``;
    read live values with ``snapshot`` and exact ones with ``finalize``. Memory per
    result is one row of columns (about 90 bytes), never the result object itself.
    """

    def __init__(self) -> None:
        self._groups = _Groups()
        self._columns = _Columns()
        self._staged: list[TestResult] = []  # not yet converted; fewer than _BATCH
        self._sketches = _Sketches()
        self._folded = 0  # rows already in the sketches and running totals
        self._live_totals = _CellTotals.zeros(0)
        self._live_sums = [_FloatSums.zeros(0) for _ in _DIMENSIONS]
        self._live_percentiles = [np.zeros((0, len(_METRICS), len(_QUANTILES)))
                                  for _ in _DIMENSIONS]

    @property
    def count(self) -> int:
        """Results added so far."""
        return self._columns.rows + len(self._staged)

    def add(self, result: TestResult) -> None:
        """Add one result."""
        self._staged.append(result)
        if len(self._staged) >= _BATCH:
            self._flush()

    def add_many(self, results: Iterable[TestResult]) -> None:
        """Add results in order. They are staged and converted to columns one batch of
        ``_BATCH`` at a time, so small deliveries cost no more per result than large
        ones; at most one batch of result objects is ever held."""
        iterator = iter(results)
        while True:
            self._staged.extend(islice(iterator, _BATCH - len(self._staged)))
            if len(self._staged) < _BATCH:
                return
            self._flush()

    def snapshot(self) -> Summary:
        """Live aggregates: exact counts and sums, percentiles from DDSketches.

        Only rows added since the previous snapshot are folded in, so the cost grows
        with the new rows and the number of groups, not with the length of the run.
        """
        self._flush()
        new = self._columns.since(self._folded)
        self._folded = self._columns.rows
        cells = self._groups.cells
        self._live_totals = self._live_totals.merged(_CellTotals.of(new, cells))
        self._live_sums = [old.merged(fresh) for old, fresh in
                           zip(self._live_sums, _float_sums(new, self._groups), strict=True)]
        touched = self._sketches.fold(new, self._groups)
        for dim, groups in enumerate(touched):
            self._refresh_percentiles(dim, groups)
        return _summary(self._groups, self._live_totals, self._live_sums,
                        self._live_percentiles, exact=False)

    def finalize(self) -> Summary:
        """Exact aggregates of every result added so far (callable repeatedly)."""
        self._flush()
        rows = self._columns.since(0)
        cells = self._groups.cells
        return _summary(self._groups, _CellTotals.of(rows, cells),
                        _float_sums(rows, self._groups),
                        _exact_percentiles(rows, self._groups), exact=True)

    def _flush(self) -> None:
        if self._staged:
            staged, self._staged = self._staged, []
            self._columns.append(_extract(staged, self._groups))

    def _refresh_percentiles(self, dim: int, touched: set[int]) -> None:
        """Re-read the sketches of the touched groups of one dimension."""
        cached = self._live_percentiles[dim]
        size = self._groups.size(dim)
        if len(cached) < size:
            grown = np.full((size, len(_METRICS), len(_QUANTILES)), np.nan)
            grown[: len(cached)] = cached
            cached = self._live_percentiles[dim] = grown
        for group in touched:
            for m in range(len(_METRICS)):
                cached[group, m] = _sketch_percentiles(self._sketches.sketch(dim, group, m))

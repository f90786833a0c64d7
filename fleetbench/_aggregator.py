"""Incremental aggregates of one run: cheap live snapshots and exact final summaries.

The aggregator is a lossless bus subscriber that may see millions of results, so it
keeps no ``TestResult`` objects. Each result becomes one row of growable numpy columns
(status code, five timings with NaN for ``None``, token and retry counts, cost and
evaluation cost) plus
one small int: its *cell*, the interned ``(repo, scenario, provider, model, category)``
tuple. Every breakdown of DESIGN §5 (fleet, provider, repository, category, scenario,
repository × provider) is a function of the cell, so a row's group in any dimension is
one table lookup, and all per-group work is vectorized over rows.

- ``finalize`` recomputes everything from the columns: counts and integer sums per
  cell (then per group), float sums per group in row order, and exact percentiles
  (numpy's default linear interpolation) from one sort per metric plus a stable radix
  sort of small group ids per dimension.
- ``snapshot`` folds only the rows added since the previous snapshot into running
  per-cell totals and per-group DDSketches (the ``ddsketch`` library, 1 % relative
  accuracy), so its cost follows the new rows and the number of groups, not the run.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain, islice
from operator import attrgetter
from types import MappingProxyType
from typing import Any, Final, TypeAlias

import numpy as np
import numpy.typing as npt
from ddsketch import LogarithmicMapping
from ddsketch.ddsketch import BaseDDSketch
from ddsketch.store import DenseStore

from fleetbench.records import Distribution, GroupStats, Status, Summary, TestResult

__all__ = ["RELATIVE_ACCURACY", "Aggregator"]

_Floats: TypeAlias = npt.NDArray[np.float64]
_Ints: TypeAlias = npt.NDArray[np.int64]
_Ids: TypeAlias = npt.NDArray[np.intp]
_CellKey: TypeAlias = tuple[str, str, str, str, str | None]

RELATIVE_ACCURACY: Final = 0.01
"""DDSketch relative accuracy of live percentiles (DESIGN §5)."""

_QUANTILES: Final = (0.5, 0.9, 0.95, 0.99)
_STATUSES: Final = tuple(Status)
_STATUS_CODE: Final = {status: code for code, status in enumerate(_STATUSES)}
_METRICS: Final = ("latency_ms", "ttft_ms", "itl_ms", "duration_ms", "queue_ms")
_LATENCY: Final = 0
# Integer columns of the row store, in this order.
_RETRIES, _INPUT, _OUTPUT, _CACHED = range(4)
# Integer aggregates of a group: the four columns' sums, then two derived counts.
_INT_TOTALS: Final = ("retries", "input_tokens", "output_tokens", "cached_input_tokens",
                      "unpriced_tests", "timed_output_tokens")
_DIMENSIONS: Final = ("fleet", "provider", "repository", "category", "scenario",
                      "repository_provider")
_FLEET, _PROVIDER, _REPOSITORY, _CATEGORY, _SCENARIO, _REPO_PROVIDER = range(6)
# Results converted per step: enough to amortize numpy calls, few enough that the
# batch's objects stay in cache while each field is read.
_BATCH: Final = 2048
_CELL_KEY = attrgetter("repo_id", "scenario", "provider", "model", "category")
_NAN: Final = math.nan


# ---------------------------------------------------------------------------- columns


@dataclass(frozen=True, slots=True)
class _Rows:
    """Columns of consecutive results, one row per result (may be views)."""

    cell: npt.NDArray[np.int32]
    status: npt.NDArray[np.int8]  # index into _STATUSES
    metrics: _Floats  # (len(_METRICS), rows); NaN where the value is None
    ints: npt.NDArray[np.int32]  # (4, rows): retries, input, output, cached tokens
    has_usage: npt.NDArray[np.bool_]
    cost: _Floats  # NaN where None
    evaluation_cost: _Floats  # what the evaluators spent (LLM judges); 0 when nothing

    def __len__(self) -> int:
        return len(self.status)

    @staticmethod
    def allocate(capacity: int) -> _Rows:
        return _Rows(
            cell=np.zeros(capacity, np.int32), status=np.zeros(capacity, np.int8),
            metrics=np.zeros((len(_METRICS), capacity)),
            ints=np.zeros((4, capacity), np.int32),
            has_usage=np.zeros(capacity, np.bool_), cost=np.zeros(capacity),
            evaluation_cost=np.zeros(capacity),
        )

    def slice(self, start: int, stop: int) -> _Rows:
        """Rows ``start:stop`` as views."""
        return _Rows(self.cell[start:stop], self.status[start:stop],
                     self.metrics[:, start:stop], self.ints[:, start:stop],
                     self.has_usage[start:stop], self.cost[start:stop],
                     self.evaluation_cost[start:stop])

    def put(self, at: int, rows: _Rows) -> None:
        """Copy ``rows`` into this buffer from row ``at`` on."""
        stop = at + len(rows)
        self.cell[at:stop] = rows.cell
        self.status[at:stop] = rows.status
        self.metrics[:, at:stop] = rows.metrics
        self.ints[:, at:stop] = rows.ints
        self.has_usage[at:stop] = rows.has_usage
        self.cost[at:stop] = rows.cost
        self.evaluation_cost[at:stop] = rows.evaluation_cost


class _Columns:
    """All rows of the run in numpy buffers whose capacity doubles when full."""

    def __init__(self) -> None:
        self._buffer = _Rows.allocate(0)
        self.rows = 0

    def append(self, rows: _Rows) -> None:
        need = self.rows + len(rows)
        if need > len(self._buffer):
            grown = _Rows.allocate(max(need, 2 * len(self._buffer), _BATCH))
            grown.put(0, self._buffer.slice(0, self.rows))
            self._buffer = grown
        self._buffer.put(self.rows, rows)
        self.rows = need

    def since(self, row: int) -> _Rows:
        """Rows ``row`` and later, as views (rows appended later are not in them)."""
        return self._buffer.slice(min(row, self.rows), self.rows)


def _extract(batch: Sequence[TestResult], groups: _Groups) -> _Rows:
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
    ints = np.zeros((4, n), np.int32)  # (0 tokens without usage)
    ints[_RETRIES] = np.fromiter([r.retries for r in batch], np.int32, n)
    used = [u for u in usages if u is not None]
    if used:
        ints[_INPUT, has_usage] = np.fromiter([u.input_tokens for u in used], np.int32)
        ints[_OUTPUT, has_usage] = np.fromiter([u.output_tokens for u in used], np.int32)
        ints[_CACHED, has_usage] = np.fromiter(
            [u.cached_input_tokens for u in used], np.int32)
    status = np.fromiter(map(_STATUS_CODE.__getitem__, [r.status for r in batch]),
                         np.int8, n)
    cost = np.fromiter([_NAN if (v := r.cost_usd) is None else v for r in batch],
                       np.float64, n)
    evaluation_cost = np.fromiter([r.evaluation_cost_usd for r in batch], np.float64, n)
    # Cells last: a batch that fails to convert registers no group without rows.
    cell = groups.intern(list(map(_CELL_KEY, [r.item for r in batch])))
    return _Rows(cell=cell, status=status, metrics=metrics, ints=ints,
                 has_usage=has_usage, cost=cost, evaluation_cost=evaluation_cost)


# ----------------------------------------------------------------------------- groups


def _narrow(ids: _Ids, groups: int) -> npt.NDArray[Any]:
    """``ids`` in the narrowest unsigned dtype that holds ``groups`` ids."""
    if groups <= 1 << 8:
        return ids.astype(np.uint8)
    if groups <= 1 << 16:
        return ids.astype(np.uint16)
    return ids


def _group_names(key: _CellKey) -> tuple[Hashable, ...]:
    """The group a cell belongs to in each dimension, in _DIMENSIONS order."""
    repo, scenario, provider, model, category = key
    provider_key = f"{provider}:{model}"  # WorkItem.provider_key
    return ("fleet", provider_key, repo, category, scenario, (repo, provider_key))


class _Groups:
    """Interns cells and maps every cell to its group id in each dimension.

    A category of ``None`` is a group like any other here; the summary leaves it out.
    """

    def __init__(self) -> None:
        self._cells: dict[_CellKey, int] = {}
        self._index: list[dict[Hashable, int]] = [{} for _ in _DIMENSIONS]
        self._names: list[list[Hashable]] = [[] for _ in _DIMENSIONS]
        self._cell_group: list[list[int]] = [[] for _ in _DIMENSIONS]
        self._tables: list[_Ids] = []
        self._narrow: list[npt.NDArray[Any]] = []

    @property
    def cells(self) -> int:
        return len(self._cells)

    def size(self, dim: int) -> int:
        return len(self._names[dim])

    def names(self, dim: int) -> list[Hashable]:
        return self._names[dim]

    def table(self, dim: int) -> _Ids:
        """Group id of each cell in dimension ``dim``."""
        if not self._tables or len(self._tables[0]) != self.cells:
            self._tables = [np.asarray(groups, np.intp) for groups in self._cell_group]
            self._narrow = [_narrow(table, self.size(d)) for d, table in enumerate(self._tables)]
        return self._tables[dim]

    def narrow_table(self, dim: int) -> npt.NDArray[Any]:
        """``table(dim)`` in the narrowest unsigned dtype, so that group ids looked up
        through it sort with numpy's radix sort (``kind="stable"`` on 8/16-bit ints)."""
        self.table(dim)
        return self._narrow[dim]

    def intern(self, keys: list[_CellKey]) -> npt.NDArray[np.int32]:
        """Cell ids of ``keys``, registering cells seen for the first time."""
        try:
            return np.fromiter(map(self._cells.__getitem__, keys), np.int32, len(keys))
        except KeyError:
            for key in keys:
                if key not in self._cells:
                    self._register(key)
            return np.fromiter(map(self._cells.__getitem__, keys), np.int32, len(keys))

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
class _Totals:
    """Exactly mergeable aggregates per cell or group: counts, integer sums, extrema."""

    status: _Ints  # (size, len(_STATUSES))
    ints: _Ints  # (size, len(_INT_TOTALS))
    n: _Ints  # (size, len(_METRICS)): rows where the metric is not None
    min: _Floats  # (size, len(_METRICS)); +inf where n is 0
    max: _Floats  # (size, len(_METRICS)); -inf where n is 0

    @staticmethod
    def zeros(size: int) -> _Totals:
        m = len(_METRICS)
        return _Totals(
            status=np.zeros((size, len(_STATUSES)), np.int64),
            ints=np.zeros((size, len(_INT_TOTALS)), np.int64),
            n=np.zeros((size, m), np.int64),
            min=np.full((size, m), np.inf), max=np.full((size, m), -np.inf),
        )

    @staticmethod
    def of(rows: _Rows, cells: int, extrema: bool) -> _Totals:
        """Aggregates of ``rows`` per cell; min/max only if ``extrema`` (finalize
        takes them from its sorted values instead)."""
        out = _Totals.zeros(cells)
        cell = rows.cell.astype(np.intp)
        codes = cell * len(_STATUSES) + rows.status
        out.status[:] = _count(codes, cells * len(_STATUSES)).reshape(out.status.shape)
        for col in range(4):
            out.ints[:, col] = _int_sum(cell, rows.ints[col], cells)
        out.ints[:, 4] = _count(cell[rows.has_usage & np.isnan(rows.cost)], cells)
        timed = ~np.isnan(rows.metrics[_LATENCY])
        out.ints[:, 5] = _int_sum(cell[timed], rows.ints[_OUTPUT][timed], cells)
        for m in range(len(_METRICS)):
            values = rows.metrics[m]
            out.n[:, m] = _count(cell[~np.isnan(values)], cells)
            if extrema:
                np.fmin.at(out.min[:, m], cell, values)
                np.fmax.at(out.max[:, m], cell, values)
        return out

    def merged(self, other: _Totals) -> _Totals:
        """Totals of both (``other`` may know more cells)."""
        mine = self.padded(len(other.status))
        return _Totals(
            status=mine.status + other.status, ints=mine.ints + other.ints,
            n=mine.n + other.n, min=np.fmin(mine.min, other.min),
            max=np.fmax(mine.max, other.max),
        )

    def padded(self, size: int) -> _Totals:
        extra = size - len(self.status)
        if extra == 0:
            return self
        pad = _Totals.zeros(extra)
        return _Totals(
            status=np.vstack([self.status, pad.status]),
            ints=np.vstack([self.ints, pad.ints]), n=np.vstack([self.n, pad.n]),
            min=np.vstack([self.min, pad.min]), max=np.vstack([self.max, pad.max]),
        )

    def by_group(self, table: _Ids, groups: int) -> _Totals:
        """Reduce cells to the groups of one dimension (``table``: cell → group)."""
        out = _Totals.zeros(groups)
        np.add.at(out.status, table, self.status)
        np.add.at(out.ints, table, self.ints)
        np.add.at(out.n, table, self.n)
        np.fmin.at(out.min, table, self.min)
        np.fmax.at(out.max, table, self.max)
        return out


def _count(ids: _Ids, size: int) -> _Ints:
    return np.bincount(ids, minlength=size).astype(np.int64)


def _int_sum(ids: _Ids, values: npt.NDArray[np.int32], size: int) -> _Ints:
    """Per-id sums of integers (exact below 2**53, far above any token count)."""
    return np.rint(np.bincount(ids, values, size)).astype(np.int64)


@dataclass(slots=True)
class _FloatSums:
    """Float sums per group of one dimension: cost, evaluation cost and each metric.

    Summed per group in row order (``np.bincount`` adds sequentially), so a final
    summary equals a plain left-to-right sum of the group's values.
    """

    cost: _Floats  # (groups,)
    metrics: _Floats  # (groups, len(_METRICS))
    evaluation_cost: _Floats  # (groups,)

    @staticmethod
    def zeros(groups: int) -> _FloatSums:
        return _FloatSums(np.zeros(groups), np.zeros((groups, len(_METRICS))),
                          np.zeros(groups))

    def merged(self, other: _FloatSums) -> _FloatSums:
        extra = len(other.cost) - len(self.cost)
        return _FloatSums(np.pad(self.cost, (0, extra)) + other.cost,
                          np.pad(self.metrics, ((0, extra), (0, 0))) + other.metrics,
                          np.pad(self.evaluation_cost, (0, extra)) + other.evaluation_cost)


def _float_sums(rows: _Rows, groups: _Groups) -> list[_FloatSums]:
    """``_FloatSums`` of ``rows`` for every dimension (None values count as 0)."""
    metrics = np.where(np.isnan(rows.metrics), 0.0, rows.metrics)
    cost = np.where(np.isnan(rows.cost), 0.0, rows.cost)
    out = []
    for dim in range(len(_DIMENSIONS)):
        size = groups.size(dim)
        gid = groups.table(dim)[rows.cell]
        sums = _FloatSums.zeros(size)
        sums.cost[:] = np.bincount(gid, cost, size)
        sums.evaluation_cost[:] = np.bincount(gid, rows.evaluation_cost, size)
        for m in range(len(_METRICS)):
            sums.metrics[:, m] = np.bincount(gid, metrics[m], size)
        out.append(sums)
    return out


# ------------------------------------------------------------------ exact percentiles

def _lerp(a: _Floats, b: _Floats, t: _Floats) -> _Floats:
    """numpy's own linear interpolation (``np.percentile`` method "linear"), which
    switches formula at t = 0.5 so that the result is exact at both ends."""
    diff = b - a
    return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def _linear_quantiles(ordered: _Floats, starts: _Ints, counts: _Ints) -> _Floats:
    """Min, percentiles and max of each group of ``ordered`` (groups laid end to end,
    each sorted): (groups, 2 + len(_QUANTILES)), NaN for empty groups. Percentiles are
    bit for bit what ``np.percentile(group, 100 * q)`` gives.
    """
    result = np.full((len(counts), 2 + len(_QUANTILES)), np.nan)
    filled = counts > 0
    if not filled.any():
        return result
    last = (counts[filled] - 1)[:, None]
    virtual = last.astype(np.float64) * np.asarray(_QUANTILES)[None, :]
    below = np.floor(virtual)
    low = below.astype(np.int64)
    high = np.minimum(low + 1, last)
    base = starts[filled][:, None]
    result[filled, 1:-1] = _lerp(ordered[base + low], ordered[base + high], virtual - below)
    result[filled, 0] = ordered[base[:, 0]]
    result[filled, -1] = ordered[base[:, 0] + last[:, 0]]
    return result


def _exact_quantiles(rows: _Rows, groups: _Groups, totals: list[_Totals]) -> list[_Floats]:
    """Exact min, percentiles and max of every metric for every group of every dimension.

    Each metric's non-None values are sorted once; per dimension, a stable (radix)
    argsort of their group ids lays the groups end to end with values still sorted
    inside each (group sizes come from ``totals``). Returns per dimension a
    (groups, metrics, [min, *percentiles, max]) array.
    """
    out = [np.full((groups.size(d), len(_METRICS), 2 + len(_QUANTILES)), np.nan)
           for d in range(len(_DIMENSIONS))]
    for m in range(len(_METRICS)):
        present = np.flatnonzero(~np.isnan(rows.metrics[m]))
        values = rows.metrics[m][present]
        order = np.argsort(values)
        ordered = values[order]
        cells = rows.cell[present[order]]
        for dim in range(len(_DIMENSIONS)):
            grouped = ordered
            if groups.size(dim) > 1:
                grouped = ordered[np.argsort(groups.narrow_table(dim)[cells], kind="stable")]
            counts = totals[dim].n[:, m]
            out[dim][:, m, :] = _linear_quantiles(grouped, np.cumsum(counts) - counts,
                                                  counts)
    return out


# ------------------------------------------------------------------ live percentiles

# A bucket code packs a value's sign (0 zero, 1 positive, 2 negative) and sketch key;
# keys stay within ±36,000 at 1 % accuracy over the whole float range.
_KEY_BITS: Final = 20
_KEY_BIAS: Final = 1 << (_KEY_BITS - 1)
_CODE_BITS: Final = _KEY_BITS + 2


class _Sketch:
    """A ``ddsketch`` sketch of one metric of one group, plus its two stores.

    The sketch is the library's (``BaseDDSketch`` assembled exactly as ``DDSketch``
    assembles it), so it merges with any other 1 % DDSketch. Holding our own
    references to its ``DenseStore``s lets ``_estimates`` read the ranks of many sketches
    in one numpy pass over their bins, instead of one Python scan per rank. (Its own
    sum, min and max are of bucket representatives; exact ones are kept in ``_Totals``.)
    """

    __slots__ = ("negative", "positive", "sketch")

    def __init__(self, mapping: LogarithmicMapping) -> None:
        self.positive = DenseStore()
        self.negative = DenseStore()
        self.sketch = BaseDDSketch(mapping, self.positive, self.negative, 0.0)


def _store_keys(stores: Sequence[DenseStore], ranks: _Ints, wanted: npt.NDArray[np.bool_],
                ) -> _Ints:
    """For each store (row) and 0-based rank: the key of the bin holding that rank —
    the first bin whose running count exceeds it, which ``DenseStore.key_at_rank``
    scans for. Entries where ``wanted`` is false are left 0."""
    keys = np.zeros(ranks.shape, np.int64)
    rows = np.flatnonzero(wanted.any(axis=1))
    if len(rows) == 0:
        return keys
    bins = [stores[i].bins for i in rows.tolist()]
    lengths = np.fromiter(map(len, bins), np.int64, len(bins))
    running = np.cumsum(np.fromiter(chain.from_iterable(bins), np.float64, lengths.sum()))
    ends = np.cumsum(lengths)
    before = np.where(ends > lengths, running[np.maximum(ends - lengths - 1, 0)], 0.0)
    found = np.searchsorted(running, before[:, None] + ranks[rows], side="right")
    offsets = np.fromiter((stores[i].offset for i in rows.tolist()), np.int64, len(rows))
    keys[rows] = found - (ends - lengths)[:, None] + offsets[:, None]
    return np.where(wanted, keys, 0)


def _estimates(sketches: Sequence[_Sketch], ranks: _Ints,
               mapping: LogarithmicMapping) -> _Floats:
    """Each sketch's estimate of its ``ranks``-th smallest values (0-based, ascending;
    one row of ranks per sketch), as ``get_quantile_value`` answers them."""
    count = np.array([s.sketch.count for s in sketches], np.float64).round()[:, None]
    negatives = np.array([s.negative.count for s in sketches], np.float64).round()[:, None]
    positives = np.array([s.positive.count for s in sketches], np.float64).round()[:, None]
    first_positive = (count - positives).astype(np.int64)
    is_negative = ranks < negatives
    is_positive = (ranks >= first_positive) & (ranks < count)  # none in an empty sketch
    # The i-th smallest negative value is the (negatives - 1 - i)-th smallest |value|.
    negative_keys = _store_keys([s.negative for s in sketches],
                                (negatives - 1 - ranks).astype(np.int64), is_negative)
    positive_keys = _store_keys([s.positive for s in sketches], ranks - first_positive,
                                is_positive)
    out = np.zeros(ranks.shape)
    out[is_negative] = -_bucket_values(negative_keys[is_negative], mapping)
    out[is_positive] = _bucket_values(positive_keys[is_positive], mapping)
    return out


def _bucket_values(keys: _Ints, mapping: LogarithmicMapping) -> _Floats:
    """``mapping.value`` of each key (computed once per distinct key)."""
    distinct, where = np.unique(keys, return_inverse=True)
    values = np.fromiter(map(mapping.value, distinct.tolist()), np.float64, len(distinct))
    return values[where]


def _sketch_quantiles(sketches: Sequence[_Sketch], mapping: LogarithmicMapping) -> _Floats:
    """Percentiles of each sketch (rows; NaN when empty) as ``np.percentile`` (linear)
    would compute them, interpolating the sketch's estimates of the two closest ranks:
    each is then within the relative accuracy of the exact percentile."""
    count = np.array([round(s.sketch.count) for s in sketches], np.int64)[:, None]
    last = np.maximum(count - 1, 0)
    virtual = last.astype(np.float64) * np.asarray(_QUANTILES)[None, :]
    below = np.floor(virtual)
    low = below.astype(np.int64)
    high = np.minimum(low + 1, last)
    ranks = np.concatenate([low, high], axis=1)
    estimates = _estimates(sketches, ranks, mapping)
    result = _lerp(estimates[:, : len(_QUANTILES)], estimates[:, len(_QUANTILES):],
                   virtual - below)
    result[count[:, 0] == 0] = np.nan
    return result


class _Sketches:
    """One ``_Sketch`` per (dimension, group, metric), fed a batch at a time.

    Bucket keys for the whole batch are computed with numpy from the library's mapping
    parameters (gamma); each distinct (group, bucket) pair is then added once through
    the library's ``add``, with the bucket's representative value ``mapping.value(key)``
    and the number of values in it as the weight. Every value lies within the relative
    accuracy of its bucket's representative, so the library's guarantee holds.
    """

    def __init__(self, relative_accuracy: float = RELATIVE_ACCURACY) -> None:
        self.mapping = LogarithmicMapping(relative_accuracy)  # the mapping DDSketch uses
        self._per_log2 = math.log(2.0) / math.log(self.mapping.gamma)
        self._sketches: list[list[list[_Sketch]]] = [[] for _ in _DIMENSIONS]
        self._representative: dict[int, float] = {}

    def get(self, dim: int, group: int, metric: int) -> _Sketch:
        return self._sketches[dim][group][metric]

    def fold(self, rows: _Rows, groups: _Groups) -> list[set[int]]:
        """Add the values of ``rows``; return the groups touched, per dimension."""
        for dim in range(len(_DIMENSIONS)):
            while len(self._sketches[dim]) < groups.size(dim):
                self._sketches[dim].append([_Sketch(self.mapping) for _ in _METRICS])
        touched: list[set[int]] = [set() for _ in _DIMENSIONS]
        for m in range(len(_METRICS)):
            values = rows.metrics[m]
            present = ~np.isnan(values)
            cell_codes, counts = self._cell_buckets(rows.cell[present], values[present])
            for dim in range(len(_DIMENSIONS)):
                touched[dim].update(
                    self._add(dim, m, groups.table(dim), cell_codes, counts))
        return touched

    def _cell_buckets(self, cells: npt.NDArray[np.int32],
                      values: _Floats) -> tuple[_Ints, _Ints]:
        """Distinct (cell, bucket) codes among the values and how many fall in each."""
        magnitude = np.minimum(np.abs(values), self.mapping.max_possible)  # inf: top key
        nonzero = magnitude > self.mapping.min_possible
        keys = np.zeros(len(values), np.int64)
        keys[nonzero] = np.ceil(np.log2(magnitude[nonzero]) * self._per_log2)
        sign = np.where(nonzero, np.where(values > 0, 1, 2), 0)
        codes = (sign << _KEY_BITS) | (keys + _KEY_BIAS)
        unique, counts = np.unique((cells.astype(np.int64) << _CODE_BITS) | codes,
                                   return_counts=True)
        return unique, counts.astype(np.int64)

    def _add(self, dim: int, metric: int, table: _Ids, cell_codes: _Ints,
             counts: _Ints) -> set[int]:
        """Sum cell buckets into group buckets and add those to the group sketches."""
        low_bits = (1 << _CODE_BITS) - 1
        gid = table[cell_codes >> _CODE_BITS].astype(np.int64)
        unique, inverse = np.unique((gid << _CODE_BITS) | (cell_codes & low_bits),
                                    return_inverse=True)
        weights = np.bincount(inverse, counts, len(unique))
        order = _extremes_first(unique >> _KEY_BITS)
        sketches = self._sketches[dim]
        group_ids = (unique >> _CODE_BITS)[order].tolist()
        for group, code, weight in zip(group_ids, (unique & low_bits)[order].tolist(),
                                       weights[order].tolist(), strict=True):
            sketches[group][metric].sketch.add(self._value(code), weight)
        return set(group_ids)

    def _value(self, code: int) -> float:
        """The representative value of a bucket code (0, or ± the mapping's value)."""
        value = self._representative.get(code)
        if value is None:
            sign, key = code >> _KEY_BITS, (code & (2 * _KEY_BIAS - 1)) - _KEY_BIAS
            value = 0.0 if sign == 0 else self.mapping.value(key)
            value = -value if sign == 2 else value
            self._representative[code] = value
        return value


def _extremes_first(runs: _Ints) -> _Ids:
    """An order over sorted codes that visits each run's last (largest) code, then the
    run from its start: a store then grows once to its full key range, not per add."""
    order = np.arange(len(runs)) - 1
    if len(runs):
        starts = np.flatnonzero(np.r_[True, runs[1:] != runs[:-1]])
        ends = np.r_[starts[1:], len(runs)]
        order[starts] = ends - 1
    return order


# ----------------------------------------------------------------------------- output


def _optional(value: float) -> float | None:
    return None if math.isnan(value) else value


def _distribution(count: int, total: float, low: float, high: float,
                  percentiles: Sequence[float]) -> Distribution:
    if count == 0:
        return Distribution()
    p50, p90, p95, p99 = (_optional(p) for p in percentiles)
    return Distribution(count=count, mean=total / count, min=low, max=high,
                        p50=p50, p90=p90, p95=p95, p99=p99)


def _group_stats(totals: _Totals, sums: _FloatSums, percentiles: _Floats,
                 group: int) -> GroupStats:
    """The ``GroupStats`` of one group from its dimension's arrays
    (``percentiles``: this group's (len(_METRICS), len(_QUANTILES)) array)."""
    status = dict(zip(_STATUSES, totals.status[group].tolist(), strict=True))
    ints = dict(zip(_INT_TOTALS, totals.ints[group].tolist(), strict=True))
    total = sum(status.values())
    n, lows, highs = (a[group].tolist() for a in (totals.n, totals.min, totals.max))
    metric_sums = sums.metrics[group].tolist()
    pct = percentiles.tolist()
    dists = [_distribution(n[m], metric_sums[m], lows[m], highs[m], pct[m])
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
        evaluation_cost_usd=float(sums.evaluation_cost[group]),
    )


def _summary(groups: _Groups, totals: list[_Totals], sums: list[_FloatSums],
             percentiles: list[_Floats], exact: bool) -> Summary:
    """Assemble the immutable ``Summary``; breakdowns are keyed in sorted order."""
    per_dim: list[MappingProxyType[Any, GroupStats]] = []
    for dim in range(len(_DIMENSIONS)):
        stats = {name: _group_stats(totals[dim], sums[dim], percentiles[dim][g], g)
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


def _per_group(totals: _Totals, groups: _Groups) -> list[_Totals]:
    return [totals.by_group(groups.table(d), groups.size(d)) for d in range(len(_DIMENSIONS))]


# ------------------------------------------------------------------------- aggregator


class Aggregator:
    """Incremental aggregates of one run.

    Feed it with ``add_many`` (the fast path; the bus delivers batches) or ``add``;
    read live values with ``snapshot`` and exact ones with ``finalize``. Memory per
    result is one row of columns (78 bytes, in buffers that double when full); result
    objects are only held until a batch of ``_BATCH`` is complete or a summary is asked
    for. Not thread-safe: one task feeds it, as the bus does.
    """

    def __init__(self) -> None:
        self._groups = _Groups()
        self._columns = _Columns()
        self._staged: list[TestResult] = []  # not yet converted; fewer than _BATCH
        self._sketches = _Sketches()
        self._folded = 0  # rows already in the sketches and the running totals
        self._live_totals = _Totals.zeros(0)
        self._live_sums = [_FloatSums.zeros(0) for _ in _DIMENSIONS]
        self._live_quantiles = [np.zeros((0, len(_METRICS), len(_QUANTILES)))
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
        """Add results in order, converted to columns ``_BATCH`` at a time, so small
        deliveries cost no more per result than large ones."""
        iterator = iter(results)
        while True:
            self._staged.extend(islice(iterator, _BATCH - len(self._staged)))
            if len(self._staged) < _BATCH:
                return
            self._flush()

    def snapshot(self) -> Summary:
        """Live aggregates: exact counts, sums, means, min and max; percentiles from
        the DDSketches, in which only rows added since the previous snapshot are folded."""
        self._flush()
        new = self._columns.since(self._folded)
        self._folded = self._columns.rows
        fresh = _Totals.of(new, self._groups.cells, extrema=True)
        self._live_totals = self._live_totals.merged(fresh)
        self._live_sums = [old.merged(add) for old, add in
                           zip(self._live_sums, _float_sums(new, self._groups), strict=True)]
        for dim, touched in enumerate(self._sketches.fold(new, self._groups)):
            self._refresh_quantiles(dim, touched)
        return _summary(self._groups, _per_group(self._live_totals, self._groups),
                        self._live_sums, self._live_quantiles, exact=False)

    def finalize(self) -> Summary:
        """Exact aggregates of every result added so far (can be called repeatedly)."""
        self._flush()
        rows = self._columns.since(0)
        totals = _per_group(_Totals.of(rows, self._groups.cells, extrema=False),
                            self._groups)
        quantiles = _exact_quantiles(rows, self._groups, totals)
        for dim_totals, dim_quantiles in zip(totals, quantiles, strict=True):
            dim_totals.min = dim_quantiles[:, :, 0]
            dim_totals.max = dim_quantiles[:, :, -1]
        return _summary(self._groups, totals, _float_sums(rows, self._groups),
                        [q[:, :, 1:-1] for q in quantiles], exact=True)

    def _flush(self) -> None:
        if self._staged:
            staged, self._staged = self._staged, []
            self._columns.append(_extract(staged, self._groups))

    def _refresh_quantiles(self, dim: int, touched: set[int]) -> None:
        """Re-read the sketches of the groups of one dimension that got new values."""
        cached = self._live_quantiles[dim]
        size = self._groups.size(dim)
        if len(cached) < size:
            grown = np.full((size, len(_METRICS), len(_QUANTILES)), np.nan)
            grown[: len(cached)] = cached
            cached = self._live_quantiles[dim] = grown
        if touched:
            groups = sorted(touched)
            sketches = [self._sketches.get(dim, g, m)
                        for g in groups for m in range(len(_METRICS))]
            quantiles = _sketch_quantiles(sketches, self._sketches.mapping)
            cached[groups] = quantiles.reshape(len(groups), len(_METRICS), len(_QUANTILES))

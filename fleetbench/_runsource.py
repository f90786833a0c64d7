"""A finished run's results read back, from the run store or from an artifact folder.

``fleetbench compare`` and the ``compare`` exporter take a run either way:

- a **run id** in the run store: every stored result, in plan order;
- an **artifact folder** ``{output.base_dir}/{run_id}/``: ``results.jsonl`` when it is
  there (the store's own shape, so nothing is lost), else ``fleet_results.json``
  (fleetbench's, or test-bench's: its legacy statuses map to ours, tests without a
  ``key`` get one built from repository, scenario, provider and test id); ``run.json``
  names the run.

Results are read lazily, one at a time, so a source can be read in constant memory.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from fleetbench._compare import RunRef
from fleetbench._serialize import result_from_dict
from fleetbench._store import DB_NAME, RunStore
from fleetbench.errors import FleetbenchError
from fleetbench.records import (
    GenerationSettings,
    ProviderResponse,
    RunStatus,
    Status,
    TestResult,
    Usage,
    Verdict,
    WorkItem,
)

__all__ = ["FLEET_RESULTS", "RESULTS_JSONL", "RUN_JSON", "RunSource", "RunSourceError",
           "from_folder", "from_store", "previous_folder", "read_run_json", "resolve"]

RUN_JSON = "run.json"
RESULTS_JSONL = "results.jsonl"
FLEET_RESULTS = "fleet_results.json"
_LEGACY_STATUS = {"success": Status.PASSED, "failure": Status.FAILED,
                  "timeout": Status.TIMEOUT, "skipped": Status.SKIPPED}


class RunSourceError(FleetbenchError):
    """A run cannot be found or read; the message names what and where."""


@dataclass(frozen=True, slots=True)
class RunSource:
    """A run to read: who it is, when it was created, and its results on demand."""

    ref: RunRef
    created_at: str | None
    read: Callable[[], Iterator[TestResult]]
    """A fresh iterator over the run's results each call."""


def from_store(store: RunStore, run_id: str) -> RunSource:
    """The run ``run_id`` of ``store``.

    :raises RunSourceError: no such run.
    """
    record = store.get_run(run_id)
    if record is None:
        raise RunSourceError(f"no run {run_id!r} in the run store {store.path}")
    ref = RunRef(record.run_id, record.fleet_id, record.status.value, "store")
    return RunSource(ref, record.created_at,
                     functools.partial(store.iter_results_in_plan_order, record.run_id))


def read_run_json(folder: Path) -> dict[str, Any] | None:
    """The ``run.json`` of an artifact folder, or ``None`` when it is missing or unreadable."""
    try:
        data = json.loads((folder / RUN_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def from_folder(folder: Path) -> RunSource:
    """The run whose artifacts are in ``folder``.

    :raises RunSourceError: the folder holds neither results file, or its
        ``fleet_results.json`` is not JSON.
    """
    meta = read_run_json(folder) or {}
    jsonl = folder / RESULTS_JSONL
    document = folder / FLEET_RESULTS
    if jsonl.is_file():
        read: Callable[[], Iterator[TestResult]] = functools.partial(_read_jsonl, jsonl)
    elif document.is_file():
        data = _load_json(document)
        meta = {**{k: data.get(k) for k in ("run_id", "fleet_id", "status")}, **meta}
        read = functools.partial(_read_fleet_results, document, data)
    else:
        raise RunSourceError(f"{folder}: holds neither {RESULTS_JSONL} nor {FLEET_RESULTS} "
                             "(a run writes them with the `jsonl` or `json` format)")
    ref = RunRef(str(meta.get("run_id") or folder.name), str(meta.get("fleet_id") or ""),
                 str(meta.get("status") or "unknown"), str(folder))
    created = meta.get("created_at")
    return RunSource(ref, created if isinstance(created, str) else None, read)


def resolve(spec: str, state_dir: Path, stack: contextlib.ExitStack) -> RunSource:
    """``spec`` as an artifact folder if one exists at that path, else as a run id in
    the store at ``state_dir`` (opened on ``stack``, never created).

    :raises RunSourceError: it is neither.
    """
    path = Path(spec)
    if path.is_dir():
        return from_folder(path)
    if not (state_dir / DB_NAME).is_file():
        raise RunSourceError(f"{spec!r} is not an artifact folder, and there is no run store "
                             f"at {state_dir} to look it up in (use --state-dir)")
    store = stack.enter_context(RunStore(state_dir))
    try:
        return from_store(store, spec)
    except RunSourceError:
        raise RunSourceError(f"{spec!r} is neither an artifact folder nor a run in the run "
                             f"store {store.path}") from None


def previous_folder(output_dir: Path, fleet_id: str, created_at: str) -> Path | None:
    """The artifact folder next to ``output_dir`` of the latest run of ``fleet_id``
    that completed, was created before ``created_at`` and left a results file."""
    best: tuple[tuple[str, str], Path] | None = None
    with contextlib.suppress(OSError):
        for folder in output_dir.parent.iterdir():
            if folder == output_dir or not folder.is_dir():
                continue
            meta = read_run_json(folder)
            if (meta is None or meta.get("fleet_id") != fleet_id
                    or meta.get("status") != RunStatus.COMPLETED.value):
                continue
            created = meta.get("created_at")
            if not isinstance(created, str) or created >= created_at:
                continue
            if not ((folder / RESULTS_JSONL).is_file() or (folder / FLEET_RESULTS).is_file()):
                continue
            rank = (created, folder.name)
            if best is None or rank > best[0]:
                best = (rank, folder)
    return None if best is None else best[1]


# ─────────────────────────────────────────────────────────────────────────── readers


def _read_jsonl(path: Path) -> Iterator[TestResult]:
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield result_from_dict(orjson.loads(line))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise RunSourceError(f"{path}:{number}: not a fleetbench result "
                                     f"({type(exc).__name__}: {exc})") from None


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunSourceError(f"{path}: cannot read it: {exc}") from None
    if not isinstance(data, dict):
        raise RunSourceError(f"{path}: not a fleet results document (not a JSON object)")
    return data


def _read_fleet_results(path: Path, data: Mapping[str, Any]) -> Iterator[TestResult]:
    """The document's results in plan order (it groups them by triple): by their
    ``index``, else (test-bench) in document order."""
    results = []
    position = 0
    for t, triple in enumerate(data.get("repository_results") or ()):
        for r, entry in enumerate(triple.get("results") or ()):
            try:
                results.append(_from_testbench(triple, entry, position))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise RunSourceError(f"{path}: repository_results[{t}].results[{r}]: not a "
                                     f"test result ({type(exc).__name__}: {exc})") from None
            position += 1
    results.sort(key=lambda result: result.item.index)
    yield from results


def _from_testbench(triple: Mapping[str, Any], entry: Mapping[str, Any],
                    index: int) -> TestResult:
    """One result of ``fleet_results.json`` (fleetbench's fields, else test-bench's)."""
    provider_name = str(triple.get("provider_name") or "")
    provider = str(triple.get("provider") or provider_name.partition(":")[0])
    model = str(triple.get("model") or provider_name.partition(":")[2])
    repo, scenario = str(triple["repository_id"]), str(triple.get("scenario") or "")
    test_id = str(entry["test_id"])
    response = entry.get("response") or {}
    usage = _usage(entry, response.get("usage") or {})
    item = WorkItem(
        key=str(entry.get("key") or f"{repo}/{scenario}/{provider}:{model}/{test_id}"),
        index=int(entry.get("index", index)), repo_id=repo, scenario=scenario,
        provider=provider, model=model, test_id=test_id, epoch=int(entry.get("epoch", 1)),
        prompt="", settings=GenerationSettings(), stream=entry.get("ttft_ms") is not None,
        category=entry.get("category"), tags=tuple(entry.get("tags") or ()))
    detail = entry.get("status_detail")
    duration = entry.get("total_ms", entry.get("duration_ms")) or 0.0
    return TestResult(
        item=item,
        status=Status(detail) if detail else _LEGACY_STATUS[entry["status"]],
        started_at=str(entry.get("started_at") or entry.get("timestamp") or ""),
        finished_at=str(entry.get("finished_at") or entry.get("timestamp") or ""),
        queue_ms=entry.get("queue_ms") or 0.0,
        latency_ms=entry.get("latency_ms", duration if response else None),
        ttft_ms=entry.get("ttft_ms"), itl_ms=entry.get("itl_ms"), total_ms=duration,
        retries=int(entry.get("retries") or 0), usage=usage, cost_usd=entry.get("cost_usd"),
        response=ProviderResponse(response.get("content") or "", usage,
                                  response.get("finish_reason")) if response else None,
        verdicts=tuple(Verdict(v["evaluator"], bool(v["passed"]), v.get("score") or 0.0,
                               v.get("detail") or "", bool(v.get("error")), v.get("cost_usd"))
                       for v in entry.get("verdicts") or ()),
        error=entry.get("error"), error_kind=entry.get("error_kind"),
        cached=bool(entry.get("cached")))


def _usage(entry: Mapping[str, Any], legacy: Mapping[str, Any]) -> Usage | None:
    """Token usage from fleetbench's flat fields, else from test-bench's response usage."""
    if entry.get("input_tokens") is not None:
        return Usage(entry["input_tokens"], entry.get("output_tokens") or 0,
                     entry.get("cached_input_tokens") or 0,
                     bool(entry.get("tokens_estimated")))
    if legacy.get("prompt_tokens") is not None:
        return Usage(legacy["prompt_tokens"], legacy.get("completion_tokens") or 0)
    return None
